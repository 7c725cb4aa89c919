// osteonet: deep-learning models for osteoporosis imaging on LibTorch (umbrella header).
#pragma once

#include "osteonet/core/call.hpp"
#include "osteonet/core/error.hpp"
#include "osteonet/core/feature_info.hpp"
#include "osteonet/core/model_registry.hpp"
#include "osteonet/core/options.hpp"
#include "osteonet/core/registry.hpp"
#include "osteonet/core/version.hpp"

#include "osteonet/attention/attention.hpp"

#include "osteonet/backbones/backbone.hpp"
#include "osteonet/backbones/densenet.hpp"
#include "osteonet/backbones/dxa_cnn.hpp"
#include "osteonet/backbones/inception.hpp"
#include "osteonet/backbones/mobilenet.hpp"
#include "osteonet/backbones/registry.hpp"
#include "osteonet/backbones/resnet.hpp"
#include "osteonet/backbones/vgg.hpp"

#include "osteonet/metrics/metrics.hpp"

#include "osteonet/clinical/categories.hpp"

#include "osteonet/segmentation/segmentation.hpp"
#include "osteonet/sequence/aggregators.hpp"
#include "osteonet/sequence/occlusion.hpp"
#include "osteonet/sequence/pipeline.hpp"
#include "osteonet/sequence/slice_encoder.hpp"

#include "osteonet/detection/anchors.hpp"
#include "osteonet/detection/box_ops.hpp"
#include "osteonet/detection/detector_backbone.hpp"
#include "osteonet/detection/faster_rcnn.hpp"
#include "osteonet/detection/fpn.hpp"
#include "osteonet/detection/nms.hpp"
#include "osteonet/detection/roi_align.hpp"
#include "osteonet/detection/roi_heads.hpp"
#include "osteonet/detection/rpn.hpp"
#include "osteonet/detection/sampling.hpp"
#include "osteonet/detection/transform.hpp"

#include "osteonet/train/checkpoint.hpp"
#include "osteonet/train/optim.hpp"
#include "osteonet/train/schedule.hpp"
#include "osteonet/train/early_stopping.hpp"
#include "osteonet/train/batchnorm.hpp"
#include "osteonet/runtime/fold_batchnorm.hpp"
#include "osteonet/runtime/inference_session.hpp"
#include "osteonet/runtime/detector_session.hpp"

#include "osteonet/screen/screen.hpp"
