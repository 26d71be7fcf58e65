// Decision: kws_edge/decision.py ported line for line (same parameters, same steps, same events).
// For each keyword k at now_ms with posterior p:
//   1. append (now_ms, p) to k's history; drop entries with time <= now_ms - smoothing_ms (keep the newest);
//   2. score = mean of the history's posteriors (summed oldest first, in double);
//   3. if now_ms < quiet_until_ms: hits = 0, no event;
//   4. else if score >= threshold: hits += 1; if hits >= min_hits: event(k, score, now_ms), hits = 0,
//      quiet_until_ms = now_ms + refractory_ms;
//   5. else: hits = 0.
// Portable C++: no Arduino, no TFLM, no heap.
#ifndef KWS_RECOGNIZE_COMMANDS_H_
#define KWS_RECOGNIZE_COMMANDS_H_

#include <stdint.h>

namespace kws {

constexpr int kMaxKeywords = 16;
// History entries per keyword. decision.py keeps every entry inside smoothing_ms; this port keeps the
// newest kMaxHistory, which is the same as long as fewer than kMaxHistory model runs fall inside
// smoothing_ms (at a 60 ms stride and 200 ms smoothing there are at most 4).
constexpr int kMaxHistory = 32;

struct DecisionConfig {
  int num_labels;
  int num_keywords;
  const int* keyword_labels;   // label index of each keyword, in the manifest's thresholds order
  const double* thresholds;    // smoothed posterior needed, per keyword
  int64_t smoothing_ms;
  int min_hits;
  int64_t refractory_ms;
};

struct DecisionEvent {
  int keyword;    // index into DecisionConfig::keyword_labels
  double score;
  int64_t t_ms;
};

class RecognizeCommands {
 public:
  // Returns false (and keeps no keywords) for a config outside the capacities or invalid values.
  bool Init(const DecisionConfig& config);
  void Reset();
  // One model output (a posterior per label) observed at now_ms; writes up to max_events events and
  // returns how many it wrote.
  int Update(const double* posteriors, int64_t now_ms, DecisionEvent* events, int max_events);

 private:
  struct Entry {
    int64_t t_ms;
    double p;
  };
  struct KeywordState {
    Entry history[kMaxHistory];
    int start;  // index of the oldest entry
    int count;
    int hits;
    int64_t quiet_until_ms;
  };
  DecisionConfig cfg_ = {};
  int keyword_labels_[kMaxKeywords] = {};
  double thresholds_[kMaxKeywords] = {};
  KeywordState state_[kMaxKeywords];
};

}  // namespace kws

#endif  // KWS_RECOGNIZE_COMMANDS_H_
