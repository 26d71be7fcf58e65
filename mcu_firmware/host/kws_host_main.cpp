// Test harness for the firmware's portable C++ (feature_provider, recognize_commands, kws_protocol). The
// same source runs on the host (g++) and on a Cortex-M4 under QEMU (semihosting: files, argv, exit code).
//
//   kws_host mfcc   CONFIG SAMPLES.s16 FRAMES.f64 WINDOWS.bin [STATS.txt]
//   kws_host decide CONFIG POSTERIORS.bin EVENTS.bin
//   kws_host proto  LINES.txt
//   kws_host sizes  SIZES.txt      (sizeof the stages: their static RAM on this target)
//
// CONFIG is "key value" lines (see tests/test_firmware_host.py). Binary files are little-endian:
//   FRAMES.f64      numcep doubles per MFCC frame
//   WINDOWS.bin     per model run: int64 now_ms, then window_frames*numcep int8 (the model input)
//   POSTERIORS.bin  per model run: int64 now_ms, then num_labels doubles
//   EVENTS.bin      per event: int32 keyword index, int64 t_ms, double score
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_provider.h"
#include "kws_protocol.h"
#include "recognize_commands.h"

#ifdef KWS_SYSTICK
// SysTick counts processor clock ticks; under qemu -icount it advances with executed instructions.
static volatile uint32_t* const kSystCsr = reinterpret_cast<volatile uint32_t*>(0xE000E010);
static volatile uint32_t* const kSystRvr = reinterpret_cast<volatile uint32_t*>(0xE000E014);
static volatile uint32_t* const kSystCvr = reinterpret_cast<volatile uint32_t*>(0xE000E018);
static void TimerStart() {
  *kSystRvr = 0x00FFFFFF;
  *kSystCvr = 0;
  *kSystCsr = 0x5;  // enable, processor clock, no interrupt
}
static uint32_t TimerNow() { return *kSystCvr; }
static uint32_t TimerElapsed(uint32_t start, uint32_t end) { return (start - end) & 0x00FFFFFF; }
// Ticks taken by exactly 4 * 1,000,000 instructions (nop, nop, subs, bne), to turn ticks into instructions.
static uint32_t CalibrationTicks() {
  const uint32_t t0 = TimerNow();
  uint32_t n = 1000000;
  __asm volatile("1: nop\n nop\n subs %0, %0, #1\n bne 1b\n" : "+r"(n) : : "cc");
  return TimerElapsed(t0, TimerNow());
}
#else
static uint32_t CalibrationTicks() { return 0; }
static void TimerStart() {}
static uint32_t TimerNow() { return 0; }
static uint32_t TimerElapsed(uint32_t, uint32_t) { return 0; }
#endif

namespace {

struct Config {
  char keys[64][32];
  char values[64][32];
  int count = 0;
  double Get(const char* key, double fallback) const {
    for (int i = 0; i < count; ++i) {
      if (strcmp(keys[i], key) == 0) return strtod(values[i], nullptr);
    }
    return fallback;
  }
};

void CopyToken(char (&dst)[32], const char* src) {
  size_t i = 0;
  for (; i + 1 < sizeof(dst) && src[i] && src[i] != '\r'; ++i) dst[i] = src[i];
  dst[i] = '\0';
}

// Reads "key value" lines; returns false if the file cannot be read.
bool LoadConfig(const char* path, Config* cfg) {
  FILE* f = fopen(path, "rb");
  if (!f) return false;
  static char text[8192];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  char* line = text;
  while (line && *line && cfg->count < 64) {
    char* next = strchr(line, '\n');
    if (next) *next++ = '\0';
    char* key_end = strchr(line, ' ');
    if (key_end) {
      *key_end = '\0';
      CopyToken(cfg->keys[cfg->count], line);
      CopyToken(cfg->values[cfg->count], key_end + 1);
      cfg->count++;
    }
    line = next;
  }
  return true;
}

kws::FeatureConfig ToFeatureConfig(const Config& c) {
  kws::FeatureConfig f;
  f.sample_rate = static_cast<int>(c.Get("sample_rate", 16000));
  f.frame_len = static_cast<int>(c.Get("frame_len", 640));
  f.hop = static_cast<int>(c.Get("hop", 320));
  f.nfft = static_cast<int>(c.Get("nfft", 1024));
  f.numcep = static_cast<int>(c.Get("numcep", 10));
  f.nfilt = static_cast<int>(c.Get("nfilt", 40));
  f.lowfreq = c.Get("lowfreq", 20.0);
  f.highfreq = c.Get("highfreq", 7600.0);
  f.preemph = c.Get("preemph", 0.97);
  f.ceplifter = static_cast<int>(c.Get("ceplifter", 22));
  f.append_energy = c.Get("append_energy", 1) != 0;
  f.window = static_cast<kws::WindowKind>(static_cast<int>(c.Get("window", 1)));
  f.window_frames = static_cast<int>(c.Get("window_frames", 49));
  f.stride_frames = static_cast<int>(c.Get("stride_frames", 3));
  f.input_scale = c.Get("input_scale", 1.0);
  f.input_zero_point = static_cast<int>(c.Get("input_zero_point", 0));
  return f;
}

int RunMfcc(int argc, char** argv) {
  Config c;
  if (argc < 6 || !LoadConfig(argv[2], &c)) return 2;
  static kws::FeatureProvider fp;
  if (fp.Init(ToFeatureConfig(c)) != kws::Status::kOk) return 3;
  const int chunk = static_cast<int>(c.Get("chunk", 320));
  FILE* in = fopen(argv[3], "rb");
  FILE* frames = fopen(argv[4], "wb");
  FILE* windows = fopen(argv[5], "wb");
  if (!in || !frames || !windows || chunk <= 0 || chunk > 4096) return 4;
  static int16_t samples[4096];
  static int8_t window[kws::kMaxWindowValues];
  const int values = fp.config().window_frames * fp.config().numcep;
  uint32_t ticks = 0;
  TimerStart();
  size_t got;
  while ((got = fread(samples, sizeof(int16_t), chunk, in)) > 0) {
    const int16_t* p = samples;
    int left = static_cast<int>(got);
    while (left > 0) {
      const uint32_t t0 = TimerNow();
      const int used = fp.Feed(p, left);
      ticks += TimerElapsed(t0, TimerNow());
      p += used;
      left -= used;
      if (!fp.FrameReady()) continue;
      fwrite(fp.LastFrame(), sizeof(double), fp.config().numcep, frames);
      if (fp.ModelDue()) {
        const int64_t now = fp.NowMs();
        fp.CopyWindow(window);
        fwrite(&now, sizeof(now), 1, windows);
        fwrite(window, 1, values, windows);
      }
    }
  }
  fclose(in);
  fclose(frames);
  fclose(windows);
  if (argc > 6) {
    FILE* stats = fopen(argv[6], "w");
    if (!stats) return 4;
    fprintf(stats, "frames %lu\nticks %lu\ncalibration_ticks_per_4M_instructions %lu\n",
            static_cast<unsigned long>(fp.FramesSeen()), static_cast<unsigned long>(ticks),
            static_cast<unsigned long>(CalibrationTicks()));
    fclose(stats);
  }
  return 0;
}

int RunDecide(int argc, char** argv) {
  Config c;
  if (argc < 5 || !LoadConfig(argv[2], &c)) return 2;
  int labels[kws::kMaxKeywords];
  double thresholds[kws::kMaxKeywords];
  int n = 0;
  for (int i = 0; i < c.count && n < kws::kMaxKeywords; ++i) {
    if (strcmp(c.keys[i], "keyword") != 0) continue;
    char* end = nullptr;
    labels[n] = static_cast<int>(strtol(c.values[i], &end, 10));
    thresholds[n++] = strtod(end, nullptr);
  }
  kws::DecisionConfig dc;
  dc.num_labels = static_cast<int>(c.Get("num_labels", 0));
  dc.num_keywords = n;
  dc.keyword_labels = labels;
  dc.thresholds = thresholds;
  dc.smoothing_ms = static_cast<int64_t>(c.Get("smoothing_ms", 200));
  dc.min_hits = static_cast<int>(c.Get("min_hits", 1));
  dc.refractory_ms = static_cast<int64_t>(c.Get("refractory_ms", 1500));
  static kws::RecognizeCommands rc;
  if (!rc.Init(dc) || dc.num_labels > 64) return 3;
  FILE* in = fopen(argv[3], "rb");
  FILE* out = fopen(argv[4], "wb");
  if (!in || !out) return 4;
  int64_t now;
  double post[64];
  kws::DecisionEvent events[kws::kMaxKeywords];
  while (fread(&now, sizeof(now), 1, in) == 1) {
    if (fread(post, sizeof(double), dc.num_labels, in) != static_cast<size_t>(dc.num_labels)) return 5;
    const int k = rc.Update(post, now, events, kws::kMaxKeywords);
    for (int i = 0; i < k; ++i) {
      const int32_t kw = events[i].keyword;
      fwrite(&kw, sizeof(kw), 1, out);
      fwrite(&events[i].t_ms, sizeof(int64_t), 1, out);
      fwrite(&events[i].score, sizeof(double), 1, out);
    }
  }
  fclose(in);
  fclose(out);
  return 0;
}

int RunProto(int argc, char** argv) {
  if (argc < 3) return 2;
  FILE* out = fopen(argv[2], "wb");
  if (!out) return 4;
  char line[kws::kMaxLineLength];
  size_t n = kws::FormatHello(line, sizeof(line), "0.1.0", "a994690c", "tiny");
  fwrite(line, 1, n, out);
  // Ties at 4 decimals (j/32 for odd j, e.g. 0.90625) round to even, as Python's "%.4f" does.
  const double scores[] = {0.0, 0.5, 0.73456, 0.99995, 1.0, 1.7, 0.90625, 0.03125, 0.96875, 0.15625};
  for (unsigned i = 0; i < sizeof(scores) / sizeof(scores[0]); ++i) {
    n = kws::FormatDetection(line, sizeof(line), "hey_jarvis", scores[i], 1000u * i + 7u);
    fwrite(line, 1, n, out);
  }
  n = kws::FormatHeartbeat(line, sizeof(line), 4294967295u, 12, 3);
  fwrite(line, 1, n, out);
  n = kws::FormatError(line, sizeof(line), "arena_too_small");
  fwrite(line, 1, n, out);
  // Invalid tokens must not produce a line.
  if (kws::FormatError(line, sizeof(line), "two words") != 0) return 6;
  if (kws::FormatDetection(line, 8, "hey_jarvis", 0.5, 1) != 0) return 6;
  fclose(out);
  return 0;
}

// Static RAM of the portable stages on this target (the firmware has one of each).
int RunSizes(int argc, char** argv) {
  if (argc < 3) return 2;
  FILE* out = fopen(argv[2], "w");
  if (!out) return 4;
  fprintf(out, "feature_provider %lu\nrecognize_commands %lu\n",
          static_cast<unsigned long>(sizeof(kws::FeatureProvider)),
          static_cast<unsigned long>(sizeof(kws::RecognizeCommands)));
  fclose(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: kws_host mfcc|decide|proto ...\n");
    return 2;
  }
  if (strcmp(argv[1], "mfcc") == 0) return RunMfcc(argc, argv);
  if (strcmp(argv[1], "decide") == 0) return RunDecide(argc, argv);
  if (strcmp(argv[1], "proto") == 0) return RunProto(argc, argv);
  if (strcmp(argv[1], "sizes") == 0) return RunSizes(argc, argv);
  fprintf(stderr, "unknown command %s\n", argv[1]);
  return 2;
}
