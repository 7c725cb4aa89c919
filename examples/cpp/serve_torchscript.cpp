// Example: serve a model exported by `osteonet export --format torchscript` with LibTorch alone (no osteonet).
//
//   example_serve_torchscript MODEL.pt                    a random batch of 2 of the input shape in the metadata
//   example_serve_torchscript MODEL.pt IN.pt OUT.pt       IN.pt: a tensor saved by Python's torch.save; OUT.pt: the
//                                                         outputs as a list of tensors (torch.load reads it)
//
// A whole detector (part "detector") takes a list of C x H x W images (the batch's images here) and returns one
// dict per image (boxes, labels, scores); OUT.pt then holds boxes, labels and scores of each image in turn.
//
// The metadata travels inside the file as the extra file osteonet.json (classes, preprocessing, the osteonet
// version, the model's name and options, inputs and outputs; docs/deploy.md). This example reads the fields
// it needs with a regular expression to stay dependency-free; a service would use a JSON library.
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

namespace {

/// The first `"key": [ ... ]` list of the metadata as its raw items ("N", 3, 64, 64).
std::vector<std::string> json_list(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\":\\s*\\[([^\\]]*)\\]"))) return {};
  std::vector<std::string> items;
  const std::string body = m[1];
  std::regex item("\\s*(\"[^\"]*\"|[^,]+)\\s*(,|$)");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), item); it != std::sregex_iterator(); ++it) {
    std::string v = (*it)[1];
    if (!v.empty()) items.push_back(v);
  }
  return items;
}

/// The first `"key": "value"` string of the metadata.
std::string json_string(const std::string& json, const std::string& key) {
  std::smatch m;
  return std::regex_search(json, m, std::regex("\"" + key + "\":\\s*\"([^\"]*)\"")) ? std::string(m[1]) : "";
}

std::vector<torch::Tensor> as_tensors(const c10::IValue& out) {
  if (out.isTensor()) return {out.toTensor()};
  std::vector<torch::Tensor> all;
  for (const auto& v : out.toTuple()->elements()) all.push_back(v.toTensor());
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt [INPUT.pt OUTPUT.pt]\n";
    return 2;
  }
  try {
    // No CPU TensorExpr fusion: torch 2.x's fuser can spend minutes compiling a DenseNet's graph at each new
    // batch size (docs/deploy.md, "torch 2.x"); the unfused program computes the same.
    torch::jit::setTensorExprFuserEnabled(false);
    // The metadata is read with the program: extra files named here are filled in by torch::jit::load.
    torch::jit::ExtraFilesMap extra{{"osteonet.json", ""}};
    torch::jit::script::Module program = torch::jit::load(argv[1], torch::kCPU, extra);
    program.eval();
    const std::string& meta = extra["osteonet.json"];
    if (meta.empty()) {
      std::cerr << argv[1] << ": no osteonet.json inside (not written by osteonet export)\n";
      return 2;
    }
    std::cout << "model " << json_string(meta, "name") << " (osteonet " << json_string(meta, "osteonet_version")
              << ", " << json_string(meta, "format") << ")\n";
    const auto classes = json_list(meta, "classes");
    if (!classes.empty()) {
      std::cout << "classes:";
      for (const auto& c : classes) std::cout << " " << c;
      std::cout << "\n";
    }
    std::cout << "mean:";
    for (const auto& v : json_list(meta, "mean")) std::cout << " " << v;
    std::cout << "  std:";
    for (const auto& v : json_list(meta, "std")) std::cout << " " << v;
    std::cout << "\n";

    torch::Tensor input;
    if (argc == 4) {
      std::ifstream f(argv[2], std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      input = torch::pickle_load(bytes).toTensor();
    } else {
      // The input's shape from the metadata: N (batch) and T (slices of a scan) are free, 2 and 4 here; a whole
      // detector takes images (C x "H" x "W"): two of the export's input_size.
      const auto size = json_list(meta, "input_size");
      std::vector<int64_t> shape;
      for (const auto& d : json_list(meta, "shape")) {
        if (d == "\"N\"") shape.push_back(2);
        else if (d == "\"T\"") shape.push_back(4);
        else if (d == "\"H\"" || d == "\"W\"") shape.push_back(std::stoll(size.at(d == "\"H\"" ? 0 : 1)));
        else shape.push_back(std::stoll(d));
      }
      if (json_string(meta, "part") == "detector") shape.insert(shape.begin(), 2);
      input = torch::rand(shape);
    }
    std::cout << "input " << input.sizes() << "\n";

    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> outputs;
    if (json_string(meta, "part") == "detector") {
      c10::List<torch::Tensor> images;
      for (const auto& image : input.unbind(0)) images.push_back(image);
      const auto detections = program.forward({images}).toList();
      for (size_t i = 0; i < detections.size(); ++i) {
        const auto d = detections.get(i).toGenericDict();
        for (const char* key : {"boxes", "labels", "scores"}) outputs.push_back(d.at(key).toTensor());
        std::cout << "image " << i << ": " << outputs.back().size(0) << " detections\n";
      }
    } else {
      outputs = as_tensors(program.forward({input}));
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const auto flat = outputs[i].flatten();
      std::cout << "output " << i << " " << outputs[i].sizes() << " first values";
      for (int64_t j = 0; j < std::min<int64_t>(4, flat.numel()); ++j) std::cout << " " << flat[j].item<float>();
      std::cout << "\n";
    }
    if (argc == 4) {
      c10::List<torch::Tensor> list;
      for (const auto& t : outputs) list.push_back(t);
      const auto bytes = torch::pickle_save(c10::IValue(list));
      std::ofstream(argv[3], std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  } catch (const c10::Error& e) {
    std::cerr << argv[1] << ": " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {  // unreadable metadata (std::stoll, std::out_of_range)
    std::cerr << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
