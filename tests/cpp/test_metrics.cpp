// doctest: metrics/*.hpp through the C++ API (values worked by hand or from scikit-learn / statsmodels).
#include "testing.hpp"

#include <osteonet/metrics/metrics.hpp>

#include <cmath>
#include <vector>

namespace om = osteonet::metrics;

TEST_CASE("confusion matrix and averaged rates") {
  const auto t = torch::tensor({0, 0, 1, 1, 2, 2}, torch::kInt64);
  const auto p = torch::tensor({0, 1, 1, 1, 2, 0}, torch::kInt64);
  const auto cm = om::confusion_matrix(t, p);
  CHECK(cm.equal(torch::tensor({1, 1, 0, 0, 2, 0, 1, 0, 1}, torch::kInt64).reshape({3, 3})));
  CHECK(om::accuracy_from_cm(cm) == doctest::Approx(4.0 / 6));
  // recall per class 1/2, 1, 1/2 -> macro 2/3; precision 1/2, 2/3, 1 -> macro 13/18
  CHECK(om::averaged_rate(cm, om::Rate::Recall, om::Average::Macro).item<double>() == doctest::Approx(2.0 / 3));
  CHECK(om::averaged_rate(cm, om::Rate::Precision, om::Average::Macro).item<double>() == doctest::Approx(13.0 / 18));
  CHECK(om::averaged_rate(cm, om::Rate::F1, om::Average::Micro).item<double>() == doctest::Approx(4.0 / 6));
  CHECK_THROWS_AS(om::confusion_matrix(t, p.narrow(0, 0, 5)), osteonet::ValueError);
  CHECK_THROWS_AS(om::parse_average("macr"), osteonet::ValueError);
}

TEST_CASE("ROC AUC with ties, and the single-class error") {
  const auto y = torch::tensor({0, 0, 1, 1}, torch::kInt64);
  const auto s = torch::tensor({0.1, 0.4, 0.4, 0.8}, torch::kFloat64);
  CHECK(om::roc_auc_binary(y, s) == doctest::Approx(0.875));  // sklearn: 0.875
  CHECK_THROWS_AS(om::roc_auc_binary(torch::ones({4}, torch::kInt64), s), osteonet::ValueError);
  const auto nan = torch::tensor(std::vector<double>{0.1, std::nan(""), 0.4, 0.8});
  CHECK_THROWS_AS(om::roc_auc_binary(y, nan), osteonet::ValueError);
}

TEST_CASE("proportion intervals equal statsmodels") {
  auto w = om::proportion_ci(7, 20, "wilson");
  CHECK(w.first == doctest::Approx(0.18119182410108203).epsilon(1e-12));   // statsmodels proportion_confint
  CHECK(w.second == doctest::Approx(0.5671457233147638).epsilon(1e-12));
  auto cp = om::proportion_ci(7, 20, "clopper-pearson");
  CHECK(cp.first == doctest::Approx(0.15390920478454118).epsilon(1e-12));
  CHECK(cp.second == doctest::Approx(0.5921885345328282).epsilon(1e-12));
}

TEST_CASE("COCO evaluation: a box at IoU exactly 0.5 matches at threshold 0.5 only") {
  om::BoxSet pred{torch::tensor({0.0, 0.0, 10.0, 20.0}).reshape({1, 4}), torch::tensor({0.9}), torch::tensor({0}, torch::kInt64)};
  om::BoxSet gt{torch::tensor({0.0, 0.0, 10.0, 10.0}).reshape({1, 4}), {}, torch::tensor({0}, torch::kInt64)};
  const auto r = om::coco_evaluate({pred}, {gt});
  CHECK(r.map_50 == doctest::Approx(1.0));
  CHECK(r.map_75 == doctest::Approx(0.0));
  CHECK(r.map == doctest::Approx(0.1));
  CHECK(om::dsnet_paper_accuracy(70, 10, 20) == doctest::Approx(0.7));
}

TEST_CASE("Dice counts and HD95 of shifted squares") {
  auto a = torch::zeros({1, 16, 16}, torch::kBool), b = torch::zeros({1, 16, 16}, torch::kBool);
  a.index_put_({0, torch::indexing::Slice(4, 8), torch::indexing::Slice(4, 8)}, true);
  b.index_put_({0, torch::indexing::Slice(4, 8), torch::indexing::Slice(6, 10)}, true);
  const auto c = om::overlap_counts(a, b);  // |A∩B| = 8, |A| = |B| = 16
  CHECK(om::overlap_from_counts(c, "dice")[0][1].item<double>() == doctest::Approx(0.5));
  CHECK(om::hausdorff_distance(a[0], b[0], 100.0) == doctest::Approx(2.0));
}

TEST_CASE("agreement: perfect line") {
  const auto x = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0});
  const auto f = om::linear_fit(x, 2 * x + 1);
  CHECK(f.slope == doctest::Approx(2.0));
  CHECK(f.intercept == doctest::Approx(1.0));
  CHECK(om::pearson(x, x * x).r == doctest::Approx(0.9811049102515929));  // scipy.stats.pearsonr
}
