// Streaming MFCC, equal to python_speech_features.mfcc for the model's FeatureParams, computed one hop at a
// time, and the window of int8-quantized frames the model reads. Portable C++: no Arduino, no TFLM.
//
// Per sample: pre-emphasis over the whole stream (the last sample is carried across calls). Per frame
// (frame_len samples, every hop samples): window, real FFT of nfft points, power spectrum / nfft, the
// triangular mel filterbank built exactly as python_speech_features.get_filterbanks builds it, log
// (an exact zero becomes DBL_EPSILON first, as the library does), orthonormal DCT-II, cepstral lifter, and
// coefficient 0 replaced by log(frame energy) when append_energy is set. Float32 arithmetic (the Cortex-M4F
// has a single-precision FPU; double is software-emulated and 13x slower, see mcu_firmware/README.md);
// the coefficients are returned as double and quantized in double as kws_edge.model.quantize does.
#ifndef KWS_FEATURE_PROVIDER_H_
#define KWS_FEATURE_PROVIDER_H_

#include <stdint.h>

namespace kws {

enum class Status { kOk = 0, kBadConfig, kOverflow };

// Arithmetic of the FFT, filterbank, log and DCT. float: the M4F's FPU (shipped). -DKWS_MFCC_DOUBLE builds
// the double variant, used only to measure what float costs in accuracy (see mcu_firmware/README.md).
#ifdef KWS_MFCC_DOUBLE
typedef double real;
#else
typedef float real;
#endif

enum class WindowKind { kRectangular = 0, kHamming = 1, kHann = 2 };

// Capacities of the statically allocated buffers (no heap on the board).
constexpr int kMaxFrameLen = 1024;     // samples in one analysis window
constexpr int kMaxNfft = 1024;         // power of two
constexpr int kMaxNfilt = 64;
constexpr int kMaxNumcep = 40;
constexpr int kMaxWindowValues = 4096; // window_frames * numcep (int8 model input)

struct FeatureConfig {
  int sample_rate;      // Hz
  int frame_len;        // samples (winlen * sample_rate, rounded half up)
  int hop;              // samples (winstep * sample_rate, rounded half up)
  int nfft;             // power of two, >= frame_len
  int numcep;
  int nfilt;
  double lowfreq;       // Hz
  double highfreq;      // Hz
  double preemph;
  int ceplifter;
  bool append_energy;
  WindowKind window;
  int window_frames;    // MFCC frames per model input
  int stride_frames;    // run the model every this many new frames
  double input_scale;   // int8 input tensor quantization
  int input_zero_point;
};

// One frame of pre-emphasised samples -> numcep MFCC coefficients.
class MfccKernel {
 public:
  Status Init(const FeatureConfig& config);
  void Compute(const real* frame, double* out);

 private:
  void RealFftPower();
  FeatureConfig cfg_;
  real window_[kMaxFrameLen];
  real cos_[kMaxNfft / 2];   // cos(2 pi k / nfft)
  real sin_[kMaxNfft / 2];   // sin(2 pi k / nfft)
  real re_[kMaxNfft / 2];
  real im_[kMaxNfft / 2];
  real power_[kMaxNfft / 2 + 1];
  int16_t bins_[kMaxNfilt + 2];  // filterbank corner bins
  real dct_[kMaxNfilt * kMaxNumcep];  // DCT-II * orthonormal scale * lifter, [filter][coefficient]
};

// Samples in, MFCC frames and the quantized model window out; owns all its buffers.
class FeatureProvider {
 public:
  Status Init(const FeatureConfig& config);
  void Reset();
  // Consumes samples up to and including the one that completes a frame; returns how many it consumed.
  // After a call, FrameReady() says whether a new frame was computed (see LastFrame()).
  int Feed(const int16_t* samples, int count);
  bool FrameReady() const { return frame_ready_; }
  const double* LastFrame() const { return frame_; }
  int64_t FramesSeen() const { return frames_; }
  // True when the newest frame completes a model window at the configured stride.
  bool ModelDue() const;
  // Copies the window_frames newest quantized frames, oldest first (window_frames * numcep values).
  void CopyWindow(int8_t* dst) const;
  // Stream time (ms) at the end of the newest frame, as kws_edge.pipeline computes it.
  int64_t NowMs() const;
  const FeatureConfig& config() const { return cfg_; }

 private:
  FeatureConfig cfg_;
  MfccKernel kernel_;
  real buf_[kMaxFrameLen];  // pre-emphasised samples of the frame being filled
  int fill_ = 0;
  real last_sample_ = 0;
  bool started_ = false;
  bool frame_ready_ = false;
  int64_t frames_ = 0;
  double frame_[kMaxNumcep];
  int8_t ring_[kMaxWindowValues];  // window_frames rows of numcep quantized values
  int ring_head_ = 0;              // row the next frame goes to
};

// float -> int8 with the tensor's scale and zero point: round half to even, then clip (as model.quantize).
int8_t QuantizeInt8(double value, double scale, int zero_point);

}  // namespace kws

#endif  // KWS_FEATURE_PROVIDER_H_
