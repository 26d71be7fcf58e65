// The Arduino core's part for the sketch on QEMU mps2-an386 (Cortex-M4F): main() calling the sketch's own
// setup() and loop(), with the board stand-ins of nano/ (audio from a file, millis, Serial to stdout).
//
//   kws_fw detect AUDIO.s16 STATS.txt
//       setup(), then loop() until the audio file is used up; the sketch's KWS1 lines go to stdout.
//   kws_fw bench WINDOWS.bin POSTERIORS.f64 STATS.txt
//       the sketch's ModelRunner alone: Begin(), then Run() on each int8 window of the file
//       (window_frames * numcep bytes each), writing num_labels doubles per run.
//
// STATS.txt has "key value" lines. Times are SysTick ticks (64-bit with a wrap counter): under
// `qemu -icount shift=0` SysTick advances with executed instructions; `calibration_ticks_per_4M_instructions`
// (a loop of exactly 4,000,000 instructions) turns ticks into instructions.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "main_functions.h"
#include "model_runner.h"
#include "model_settings.h"
#include "nano/nano_standin.h"
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"

namespace {

volatile uint32_t* const kSystCsr = reinterpret_cast<volatile uint32_t*>(0xE000E010);
volatile uint32_t* const kSystRvr = reinterpret_cast<volatile uint32_t*>(0xE000E014);
volatile uint32_t* const kSystCvr = reinterpret_cast<volatile uint32_t*>(0xE000E018);
constexpr uint32_t kReload = 0x00FFFFFF;
volatile uint32_t g_wraps = 0;

void TimerStart() {
  *kSystRvr = kReload;
  *kSystCvr = 0;
  *kSystCsr = 0x7;  // enable, interrupt on wrap, processor clock
}

uint64_t Ticks() {
  uint32_t wraps, value;
  do {
    wraps = g_wraps;
    value = *kSystCvr;
  } while (wraps != g_wraps);
  return (static_cast<uint64_t>(wraps) << 24) + (kReload - value);
}

// Ticks taken by exactly 4 * 1,000,000 instructions (nop, nop, subs, bne).
uint64_t CalibrationTicks() {
  const uint64_t t0 = Ticks();
  uint32_t n = 1000000;
  __asm volatile("1: nop\n nop\n subs %0, %0, #1\n bne 1b\n" : "+r"(n) : : "cc");
  return Ticks() - t0;
}

void LogToStderr(const char* s) { fputs(s, stderr); }

// "key value\n" (newlib-nano's printf has no %llu).
void Stat(FILE* f, const char* key, uint64_t value) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value);
  fputs(key, f);
  fputc(' ', f);
  while (n) fputc(digits[--n], f);
  fputc('\n', f);
}

int Detect(int argc, char** argv) {
  if (argc < 4 || !kws_standin::OpenAudio(argv[2])) return 4;
  const uint64_t t0 = Ticks();
  setup();
  const uint64_t t1 = Ticks();
  int idle = 0;  // loop() calls that consumed no audio: the sketch has stopped (it reports ERR)
  while (!kws_standin::AudioDone() && idle < 4) {
    const uint64_t before = kws_standin::SamplesRead();
    loop();
    idle = kws_standin::SamplesRead() == before ? idle + 1 : 0;
  }
  const uint64_t t2 = Ticks();
  fflush(stdout);
  FILE* f = fopen(argv[3], "w");
  if (!f) return 4;
  Stat(f, "samples", kws_standin::SamplesRead());
  Stat(f, "setup_ticks", t1 - t0);
  Stat(f, "loop_ticks", t2 - t1);
  Stat(f, "calibration_ticks_per_4M_instructions", CalibrationTicks());
  fclose(f);
  return kws_standin::AudioDone() ? 0 : 3;
}

int Bench(int argc, char** argv) {
  if (argc < 5) return 2;
  FILE* in = fopen(argv[2], "rb");
  FILE* out = fopen(argv[3], "wb");
  if (!in || !out) return 4;
  static kws::ModelRunner runner;
  const char* error = "";
  const uint64_t t0 = Ticks();
  if (!runner.Begin(&error)) {
    fprintf(stderr, "ModelRunner::Begin: %s\n", error);
    return 5;
  }
  const uint64_t begin_ticks = Ticks() - t0;
  static int8_t window[kws_model::kWindowFrames * kws_model::kNumcep];
  double posteriors[kws_model::kNumLabels];
  uint64_t run_ticks = 0, runs = 0;
  while (fread(window, 1, sizeof(window), in) == sizeof(window)) {
    const uint64_t t = Ticks();
    if (!runner.Run(window, posteriors)) return 6;
    run_ticks += Ticks() - t;
    ++runs;
    fwrite(posteriors, sizeof(double), kws_model::kNumLabels, out);
  }
  fclose(in);
  fclose(out);
  FILE* f = fopen(argv[4], "w");
  if (!f) return 4;
  Stat(f, "runs", runs);
  Stat(f, "run_ticks", run_ticks);
  Stat(f, "begin_ticks", begin_ticks);
  Stat(f, "arena_used_bytes", runner.arena_used_bytes());
  Stat(f, "arena_bytes", kws_model::kTensorArenaSize);
  Stat(f, "calibration_ticks_per_4M_instructions", CalibrationTicks());
  fclose(f);
  return 0;
}

}  // namespace

extern "C" void SysTick_Handler() { g_wraps = g_wraps + 1; }

int main(int argc, char** argv) {
  RegisterDebugLogCallback(LogToStderr);  // TFLM's MicroPrintf (errors) -> stderr
  TimerStart();
  if (argc >= 2 && strcmp(argv[1], "detect") == 0) return Detect(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "bench") == 0) return Bench(argc, argv);
  fprintf(stderr, "usage: kws_fw detect AUDIO.s16 STATS.txt | bench WINDOWS.bin POSTERIORS.f64 STATS.txt\n");
  return 2;
}
