// TFLite Micro side of the firmware; see model_runner.h.
#include "model_runner.h"

#include <TensorFlowLite.h>
#include <string.h>

#include "model_data.h"
#include "model_ops.h"
#include "model_settings.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace kws {
namespace {

alignas(16) uint8_t g_arena[kws_model::kTensorArenaSize];
kws_model::OpResolver g_resolver;
tflite::MicroInterpreter* g_interpreter = nullptr;

}  // namespace

bool ModelRunner::Begin(const char** error) {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    *error = "model_schema";
    return false;
  }
  if (kws_model::RegisterOps(g_resolver) != kTfLiteOk) {
    *error = "op_register";
    return false;
  }
  // One allocator over the arena serves the interpreter and, for a streaming model, the resource variables
  // that hold its state between runs (as many slots as the model has variables; model_settings.h).
  tflite::MicroAllocator* allocator = tflite::MicroAllocator::Create(g_arena, kws_model::kTensorArenaSize);
  if (allocator == nullptr) {
    *error = "arena_too_small";
    return false;
  }
  tflite::MicroResourceVariables* variables = nullptr;
  if (kws_model::kNumResourceVariables > 0) {
    variables = tflite::MicroResourceVariables::Create(allocator, kws_model::kNumResourceVariables);
    if (variables == nullptr) {
      *error = "arena_too_small";
      return false;
    }
  }
  static tflite::MicroInterpreter interpreter(model, g_resolver, allocator, variables);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    *error = "arena_too_small";
    return false;
  }
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (input->type != kTfLiteInt8 || output->type != kTfLiteInt8 ||
      input->bytes != static_cast<size_t>(kws_model::kWindowFrames * kws_model::kNumcep) ||
      output->bytes != static_cast<size_t>(kws_model::kNumLabels)) {
    *error = "tensor_shape";
    return false;
  }
  input_scale_ = input->params.scale;
  input_zero_point_ = input->params.zero_point;
  g_interpreter = &interpreter;
  return true;
}

bool ModelRunner::Run(const int8_t* window, double* posteriors) {
  if (!g_interpreter) return false;
  TfLiteTensor* input = g_interpreter->input(0);
  memcpy(input->data.int8, window, input->bytes);
  if (g_interpreter->Invoke() != kTfLiteOk) return false;
  const TfLiteTensor* output = g_interpreter->output(0);
  const double scale = output->params.scale;
  const int zero_point = output->params.zero_point;
  for (int i = 0; i < kws_model::kNumLabels; ++i) {
    posteriors[i] = (static_cast<double>(output->data.int8[i]) - zero_point) * scale;
  }
  return true;
}

size_t ModelRunner::arena_used_bytes() const {
  return g_interpreter ? g_interpreter->arena_used_bytes() : 0;
}

}  // namespace kws
