// Wires the stages: audio_provider -> feature_provider -> model_runner -> recognize_commands ->
// command_responder. Times in DET/HB lines are audio stream times (samples / sample rate), so they match
// what kws_edge.pipeline computes for the same samples.
//
// Every hop's MFCC frame is always computed. The model runs at every stride_frames-th frame, as on the Pi,
// while the loop keeps up with the microphone; when a model run is due but more than one stride of audio
// is waiting, that run is skipped (counted in g_skipped_runs) so the loop catches up instead of dropping
// audio. A model slower than its stride thus runs as often as the CPU allows, on correct windows.
// A streaming model (kStreaming: its past lives in resource variables inside the model) must see every
// step, so its runs are never skipped. Decisions count from kWarmupFrames frames on (the window model's
// first full window; a streaming model's receptive field), as kws_edge.pipeline.Detector counts them.
#include "main_functions.h"

#include <Arduino.h>
#include <math.h>

#include "audio_provider.h"
#include "command_responder.h"
#include "feature_provider.h"
#include "model_runner.h"
#include "model_settings.h"
#include "recognize_commands.h"

namespace {

constexpr uint32_t kHeartbeatMs = 1000;
constexpr uint32_t kHelloMs = 10000;

kws::FeatureProvider g_features;
kws::ModelRunner g_model;
kws::RecognizeCommands g_decision;
const char* g_error = nullptr;  // set when the firmware cannot run; reported every second
uint32_t g_last_heartbeat = 0;
uint32_t g_last_hello = 0;
uint64_t g_samples = 0;  // samples consumed since start
uint32_t g_skipped_runs = 0;  // model runs skipped to catch up with the microphone
int16_t g_audio[512];
int8_t g_window[kws_model::kWindowFrames * kws_model::kNumcep];

kws::FeatureConfig MakeFeatureConfig() {
  kws::FeatureConfig c;
  c.sample_rate = kws_model::kSampleRate;
  c.frame_len = kws_model::kFrameLen;
  c.hop = kws_model::kHop;
  c.nfft = kws_model::kNfft;
  c.numcep = kws_model::kNumcep;
  c.nfilt = kws_model::kNfilt;
  c.lowfreq = kws_model::kLowFreq;
  c.highfreq = kws_model::kHighFreq;
  c.preemph = kws_model::kPreemph;
  c.ceplifter = kws_model::kCepLifter;
  c.append_energy = kws_model::kAppendEnergy;
  c.window = static_cast<kws::WindowKind>(kws_model::kWindowKind);
  c.window_frames = kws_model::kWindowFrames;
  c.stride_frames = kws_model::kStrideFrames;
  c.input_scale = g_model.input_scale();  // from the tensor, not the manifest
  c.input_zero_point = g_model.input_zero_point();
  return c;
}

bool Begin() {
  if (!g_model.Begin(&g_error)) return false;
  const double scale_error = fabs(g_model.input_scale() - kws_model::kInputScale);
  if (g_model.input_zero_point() != kws_model::kInputZeroPoint || scale_error > 1e-6 * kws_model::kInputScale) {
    g_error = "quant_mismatch";  // the model data and model_settings.h come from different exports
    return false;
  }
  if (g_features.Init(MakeFeatureConfig()) != kws::Status::kOk) {
    g_error = "feature_config";
    return false;
  }
  kws::DecisionConfig d;
  d.num_labels = kws_model::kNumLabels;
  d.num_keywords = kws_model::kNumKeywords;
  d.keyword_labels = kws_model::kKeywordLabels;
  d.thresholds = kws_model::kThresholds;
  d.smoothing_ms = kws_model::kSmoothingMs;
  d.min_hits = kws_model::kMinHits;
  d.refractory_ms = kws_model::kRefractoryMs;
  if (!g_decision.Init(d)) {
    g_error = "decision_config";
    return false;
  }
  if (!kws::AudioBegin(kws_model::kSampleRate)) {
    g_error = "microphone";
    return false;
  }
  return true;
}

void OnModelDue() {
  double posteriors[kws_model::kNumLabels];
  g_features.CopyWindow(g_window);
  if (!g_model.Run(g_window, posteriors)) {
    kws::RespondError("invoke");
    return;
  }
  kws::RespondModelRun();
  if (g_features.FramesSeen() < kws_model::kWarmupFrames) return;  // outputs still depend on the start
  const int64_t now = g_features.NowMs();
  kws::DecisionEvent events[kws_model::kNumKeywords];
  const int n = g_decision.Update(posteriors, now, events, kws_model::kNumKeywords);
  for (int i = 0; i < n; ++i) {
    const int k = events[i].keyword;
    kws::RespondToDetection(k, kws_model::kLabels[kws_model::kKeywordLabels[k]], events[i].score,
                            static_cast<uint32_t>(events[i].t_ms), millis());
  }
}

void Periodic(uint32_t now) {
  kws::ResponderUpdate(now);
  if (now - g_last_hello >= kHelloMs) {
    g_last_hello = now;
    kws::RespondHello();
  }
  if (now - g_last_heartbeat >= kHeartbeatMs) {
    g_last_heartbeat = now;
    if (g_error) {
      kws::RespondError(g_error);
    } else {
      kws::RespondHeartbeat(static_cast<uint32_t>(g_samples * 1000 / kws_model::kSampleRate),
                            kws::AudioDropped(), g_skipped_runs);
    }
  }
}

}  // namespace

void setup() {
  Serial.begin(115200);  // USB CDC: the baud rate is nominal; never wait for a host to open the port
  kws::ResponderBegin();
  Begin();
  kws::RespondHello();
  g_last_hello = g_last_heartbeat = millis();
}

void loop() {
  Periodic(millis());
  if (g_error) return;
  const int n = kws::AudioRead(g_audio, 512);
  const int16_t* p = g_audio;
  int left = n;
  while (left > 0) {
    const int used = g_features.Feed(p, left);
    p += used;
    left -= used;
    g_samples += used;
    if (!g_features.FrameReady() || !g_features.ModelDue()) continue;
    if (!kws_model::kStreaming && left + kws::AudioBacklog() > kws_model::kStrideFrames * kws_model::kHop) {
      ++g_skipped_runs;  // behind the microphone: catch up first
    } else {
      OnModelDue();
    }
  }
}
