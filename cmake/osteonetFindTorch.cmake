# Finds LibTorch: first where CMake already looks (Debian's libtorch-dev, Torch_DIR, CMAKE_PREFIX_PATH),
# then through the Python interpreter's torch (pip's torch: torch.utils.cmake_prefix_path).
if(NOT TARGET torch)
  find_package(Torch QUIET)
  if(NOT Torch_FOUND)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    if(Python3_Interpreter_FOUND)
      execute_process(
        COMMAND "${Python3_EXECUTABLE}" -c "import torch; print(torch.utils.cmake_prefix_path)"
        OUTPUT_VARIABLE _osteonet_torch_prefix
        OUTPUT_STRIP_TRAILING_WHITESPACE
        RESULT_VARIABLE _osteonet_torch_rc
        ERROR_QUIET)
      if(_osteonet_torch_rc EQUAL 0)
        list(APPEND CMAKE_PREFIX_PATH "${_osteonet_torch_prefix}")
      endif()
    endif()
    find_package(Torch REQUIRED)
  endif()
endif()
