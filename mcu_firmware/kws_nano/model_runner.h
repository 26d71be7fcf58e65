// Model: TensorFlow Lite Micro MicroInterpreter over the generated model_data, with a
// MicroMutableOpResolver that registers exactly the model's ops (model_ops.h) and the arena size from
// the manifest (model_settings.h). Input quantization comes from the input tensor itself. A streaming
// model keeps its state in TFLM resource variables (kNumResourceVariables slots, created over the arena);
// each Run() is then one step of the stream and must follow the previous one.
#ifndef KWS_MODEL_RUNNER_H_
#define KWS_MODEL_RUNNER_H_

#include <stddef.h>
#include <stdint.h>

namespace kws {

class ModelRunner {
 public:
  // Builds the interpreter; on failure returns false and sets *error to a KWS1 ERR code.
  bool Begin(const char** error);
  // The input tensor's quantization (what the feature provider must quantize with).
  double input_scale() const { return input_scale_; }
  int input_zero_point() const { return input_zero_point_; }
  // Runs on window_frames * numcep int8 values; writes one dequantized posterior per label.
  bool Run(const int8_t* window, double* posteriors);
  size_t arena_used_bytes() const;

 private:
  double input_scale_ = 0.0;
  int input_zero_point_ = 0;
};

}  // namespace kws

#endif  // KWS_MODEL_RUNNER_H_
