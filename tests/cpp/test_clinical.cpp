// doctest: clinical categories (clinical/categories.hpp).
#include "testing.hpp"

#include <osteonet/clinical/categories.hpp>

namespace oc = osteonet::clinical;

TEST_CASE("WHO classes at the T-score thresholds") {
  CHECK(oc::who_class(-1.0) == oc::BoneClass::kNormal);
  CHECK(oc::who_class(-1.0001) == oc::BoneClass::kOsteopenia);
  CHECK(oc::who_class(-2.5) == oc::BoneClass::kOsteoporosis);
  CHECK(oc::class_name(oc::who_class(-2.0)) == "osteopenia");
  auto t = torch::tensor({0.0, -1.0, -1.5, -2.5, -3.0}, torch::kFloat64);
  CHECK(oc::who_class(t).equal(torch::tensor({0, 0, 1, 2, 2}, torch::kInt64)));
  CHECK_THROWS_AS(oc::who_class(std::nan("")), osteonet::ValueError);
}

TEST_CASE("ACR classes at the QCT BMD thresholds") {
  CHECK(oc::acr_class(120.5) == oc::BoneClass::kNormal);
  CHECK(oc::acr_class(120.0) == oc::BoneClass::kOsteopenia);
  CHECK(oc::acr_class(80.0) == oc::BoneClass::kOsteopenia);
  CHECK(oc::acr_class(79.9) == oc::BoneClass::kOsteoporosis);
  CHECK_THROWS_AS(oc::acr_class(torch::tensor({100.0, -1.0})), osteonet::ValueError);
  CHECK_THROWS_AS(oc::acr_class(torch::tensor({100})), osteonet::TypeError);
  CHECK(oc::class_from_name("osteoporosis") == oc::BoneClass::kOsteoporosis);
  CHECK_THROWS_AS(oc::class_from_name("osteoprosis"), osteonet::ValueError);
}
