// Metrics (umbrella): classification, intervals and tests, detection, segmentation, agreement.
#pragma once

#include "osteonet/metrics/agreement.hpp"
#include "osteonet/metrics/classification.hpp"
#include "osteonet/metrics/detection.hpp"
#include "osteonet/metrics/distributions.hpp"
#include "osteonet/metrics/intervals.hpp"
#include "osteonet/metrics/segmentation.hpp"
