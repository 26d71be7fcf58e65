// Streaming MFCC equal to python_speech_features (see feature_provider.h for the steps).
#include "feature_provider.h"

#include <math.h>

#include <cmath>
#include <string.h>

namespace kws {
namespace {

constexpr double kPi = 3.14159265358979323846;
// log(DBL_EPSILON): python_speech_features replaces an exactly zero energy by numpy's float64 eps.
constexpr real kHalf = static_cast<real>(0.5);
constexpr real kLogDblEpsilon = static_cast<real>(-36.04365338911715);

bool IsPowerOfTwo(int n) { return n > 1 && (n & (n - 1)) == 0; }

double HzToMel(double hz) { return 2595.0 * log10(1.0 + hz / 700.0); }
double MelToHz(double mel) { return 700.0 * (pow(10.0, mel / 2595.0) - 1.0); }

}  // namespace

int8_t QuantizeInt8(double value, double scale, int zero_point) {
  double q = rint(value / scale) + zero_point;  // rint: round half to even in the default rounding mode
  if (q < -128.0) q = -128.0;
  if (q > 127.0) q = 127.0;
  return static_cast<int8_t>(q);
}

Status MfccKernel::Init(const FeatureConfig& c) {
  if (c.sample_rate <= 0 || c.frame_len <= 0 || c.frame_len > kMaxFrameLen || c.hop <= 0 ||
      c.hop > c.frame_len || !IsPowerOfTwo(c.nfft) || c.nfft > kMaxNfft || c.nfft < c.frame_len ||
      c.nfilt <= 0 || c.nfilt > kMaxNfilt || c.numcep <= 0 || c.numcep > c.nfilt ||
      c.numcep > kMaxNumcep || !(c.lowfreq >= 0.0 && c.lowfreq < c.highfreq) ||
      c.highfreq > c.sample_rate / 2.0) {
    return Status::kBadConfig;
  }
  cfg_ = c;
  const int n = c.frame_len;
  for (int i = 0; i < n; ++i) {
    double w = 1.0;  // numpy.hamming / numpy.hanning
    if (n > 1 && c.window == WindowKind::kHamming) w = 0.54 - 0.46 * cos(2.0 * kPi * i / (n - 1));
    if (n > 1 && c.window == WindowKind::kHann) w = 0.5 - 0.5 * cos(2.0 * kPi * i / (n - 1));
    window_[i] = static_cast<real>(w);
  }
  for (int k = 0; k < c.nfft / 2; ++k) {
    cos_[k] = static_cast<real>(cos(2.0 * kPi * k / c.nfft));
    sin_[k] = static_cast<real>(sin(2.0 * kPi * k / c.nfft));
  }
  // Filterbank corners exactly as get_filterbanks: numpy.linspace over mel, then floor.
  const double low_mel = HzToMel(c.lowfreq);
  const double step = (HzToMel(c.highfreq) - low_mel) / (c.nfilt + 1);
  for (int i = 0; i < c.nfilt + 2; ++i) {
    double mel = (i == c.nfilt + 1) ? HzToMel(c.highfreq) : i * step + low_mel;
    bins_[i] = static_cast<int16_t>(floor((c.nfft + 1) * MelToHz(mel) / c.sample_rate));
  }
  for (int j = 0; j < c.nfilt; ++j) {
    for (int k = 0; k < c.numcep; ++k) {
      double basis = cos(kPi * (2 * j + 1) * k / (2.0 * c.nfilt));
      double scale = sqrt((k == 0 ? 1.0 : 2.0) / c.nfilt);
      double lift = c.ceplifter > 0 ? 1.0 + (c.ceplifter / 2.0) * sin(kPi * k / c.ceplifter) : 1.0;
      dct_[j * c.numcep + k] = static_cast<real>(basis * scale * lift);
    }
  }
  return Status::kOk;
}

// power_[k] = |FFT_nfft(window * frame)[k]|^2 / nfft for k = 0..nfft/2, with one complex FFT of nfft/2
// points over the even/odd samples packed as real/imaginary parts, then the standard split.
void MfccKernel::RealFftPower() {
  const int m = cfg_.nfft / 2;
  for (int i = 1, j = 0; i < m; ++i) {  // bit-reversal permutation
    int bit = m >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      real t = re_[i]; re_[i] = re_[j]; re_[j] = t;
      t = im_[i]; im_[i] = im_[j]; im_[j] = t;
    }
  }
  for (int len = 2; len <= m; len <<= 1) {  // radix-2 butterflies, twiddles exp(-2 pi i k / len)
    const int half = len / 2;
    const int stride = cfg_.nfft / len;
    for (int base = 0; base < m; base += len) {
      for (int k = 0; k < half; ++k) {
        const real wr = cos_[k * stride], wi = -sin_[k * stride];
        const int a = base + k, b = a + half;
        const real vr = re_[b] * wr - im_[b] * wi;
        const real vi = re_[b] * wi + im_[b] * wr;
        re_[b] = re_[a] - vr; im_[b] = im_[a] - vi;
        re_[a] += vr; im_[a] += vi;
      }
    }
  }
  const real inv_n = static_cast<real>(1) / cfg_.nfft;
  const real dc = re_[0] + im_[0], nyquist = re_[0] - im_[0];
  power_[0] = dc * dc * inv_n;
  power_[m] = nyquist * nyquist * inv_n;
  for (int k = 1; k < m; ++k) {
    const real a = re_[k], b = im_[k], c = re_[m - k], d = im_[m - k];
    const real er = kHalf * (a + c), ei = kHalf * (b - d);   // even part
    const real orr = kHalf * (b + d), oi = -kHalf * (a - c);  // odd part
    const real wr = cos_[k], wi = -sin_[k];
    const real xr = er + wr * orr - wi * oi;
    const real xi = ei + wr * oi + wi * orr;
    power_[k] = (xr * xr + xi * xi) * inv_n;
  }
}

void MfccKernel::Compute(const real* frame, double* out) {
  const int m = cfg_.nfft / 2;
  for (int i = 0; i < m; ++i) {
    const int t0 = 2 * i, t1 = 2 * i + 1;
    re_[i] = t0 < cfg_.frame_len ? frame[t0] * window_[t0] : 0;
    im_[i] = t1 < cfg_.frame_len ? frame[t1] * window_[t1] : 0;
  }
  RealFftPower();
  real log_energy[kMaxNfilt];
  for (int j = 0; j < cfg_.nfilt; ++j) {
    const int lo = bins_[j], mid = bins_[j + 1], hi = bins_[j + 2];
    real e = 0;
    const real rise = mid > lo ? static_cast<real>(1) / (mid - lo) : 0;
    const real fall = hi > mid ? static_cast<real>(1) / (hi - mid) : 0;
    for (int i = lo; i < mid; ++i) e += power_[i] * (static_cast<real>(i - lo) * rise);
    for (int i = mid; i < hi; ++i) e += power_[i] * (static_cast<real>(hi - i) * fall);
    log_energy[j] = e == 0 ? kLogDblEpsilon : std::log(e);
  }
  for (int k = 0; k < cfg_.numcep; ++k) {
    real acc = 0;
    for (int j = 0; j < cfg_.nfilt; ++j) acc += log_energy[j] * dct_[j * cfg_.numcep + k];
    out[k] = acc;
  }
  if (cfg_.append_energy) {
    real total = 0;
    for (int k = 0; k <= m; ++k) total += power_[k];
    out[0] = total == 0 ? kLogDblEpsilon : std::log(total);
  }
}

Status FeatureProvider::Init(const FeatureConfig& config) {
  if (config.window_frames <= 0 || config.stride_frames <= 0 ||
      config.window_frames * config.numcep > kMaxWindowValues || !(config.input_scale > 0.0)) {
    return Status::kBadConfig;
  }
  Status status = kernel_.Init(config);
  if (status != Status::kOk) return status;
  cfg_ = config;
  Reset();
  return Status::kOk;
}

void FeatureProvider::Reset() {
  fill_ = 0;
  last_sample_ = 0;
  started_ = false;
  frame_ready_ = false;
  frames_ = 0;
  ring_head_ = 0;
  memset(ring_, 0, sizeof(ring_));
  memset(frame_, 0, sizeof(frame_));
}

int FeatureProvider::Feed(const int16_t* samples, int count) {
  frame_ready_ = false;
  int used = 0;
  while (used < count) {
    const real x = samples[used++];
    const double emph = started_ ? x - cfg_.preemph * last_sample_ : x;
    buf_[fill_++] = static_cast<real>(emph);
    last_sample_ = x;
    started_ = true;
    if (fill_ < cfg_.frame_len) continue;
    kernel_.Compute(buf_, frame_);
    int8_t* row = ring_ + ring_head_ * cfg_.numcep;
    for (int k = 0; k < cfg_.numcep; ++k) {
      row[k] = QuantizeInt8(frame_[k], cfg_.input_scale, cfg_.input_zero_point);
    }
    ring_head_ = (ring_head_ + 1) % cfg_.window_frames;
    ++frames_;
    frame_ready_ = true;
    memmove(buf_, buf_ + cfg_.hop, sizeof(real) * (cfg_.frame_len - cfg_.hop));
    fill_ = cfg_.frame_len - cfg_.hop;
    break;
  }
  return used;
}

bool FeatureProvider::ModelDue() const {
  return frames_ >= cfg_.window_frames && (frames_ - cfg_.window_frames) % cfg_.stride_frames == 0;
}

void FeatureProvider::CopyWindow(int8_t* dst) const {
  const int rows = cfg_.window_frames, n = cfg_.numcep;
  for (int r = 0; r < rows; ++r) {
    memcpy(dst + r * n, ring_ + ((ring_head_ + r) % rows) * n, n);
  }
}

int64_t FeatureProvider::NowMs() const {
  if (frames_ == 0) return 0;
  const int64_t end_sample = (frames_ - 1) * cfg_.hop + cfg_.frame_len;
  return end_sample * 1000 / cfg_.sample_rate;
}

}  // namespace kws
