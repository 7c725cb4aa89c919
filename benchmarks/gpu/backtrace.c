// LD_PRELOAD helper for GPU runs (benchmarks/gpu/run.sh): on SIGSEGV, SIGBUS or SIGABRT it writes the native
// backtrace to stderr, then the process dies of the signal as before (Python's faulthandler chains to it).
// Build: gcc -shared -fPIC -O1 benchmarks/gpu/backtrace.c -o /tmp/backtrace.so
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

static void on_fatal(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  static const char head[] = "\n== native backtrace ==\n";
  (void)!write(2, head, sizeof head - 1);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  signal(SIGSEGV, on_fatal);
  signal(SIGBUS, on_fatal);
  signal(SIGABRT, on_fatal);
}
