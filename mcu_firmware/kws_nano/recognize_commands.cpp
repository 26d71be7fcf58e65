// kws_edge/decision.py, line for line; see recognize_commands.h.
#include "recognize_commands.h"

namespace kws {

bool RecognizeCommands::Init(const DecisionConfig& config) {
  cfg_ = DecisionConfig{};
  if (config.num_keywords < 0 || config.num_keywords > kMaxKeywords || config.min_hits < 1 ||
      config.smoothing_ms < 0 || config.refractory_ms < 0) {
    return false;
  }
  for (int i = 0; i < config.num_keywords; ++i) {
    const int label = config.keyword_labels[i];
    const double thr = config.thresholds[i];
    if (label < 0 || label >= config.num_labels || !(thr >= 0.0 && thr <= 1.0)) return false;
    keyword_labels_[i] = label;
    thresholds_[i] = thr;
  }
  cfg_ = config;
  cfg_.keyword_labels = keyword_labels_;
  cfg_.thresholds = thresholds_;
  Reset();
  return true;
}

void RecognizeCommands::Reset() {
  for (int i = 0; i < kMaxKeywords; ++i) {
    state_[i].start = 0;
    state_[i].count = 0;
    state_[i].hits = 0;
    state_[i].quiet_until_ms = -(INT64_C(1) << 62);
  }
}

int RecognizeCommands::Update(const double* posteriors, int64_t now_ms, DecisionEvent* events,
                              int max_events) {
  int n_events = 0;
  const int64_t horizon = now_ms - cfg_.smoothing_ms;
  for (int k = 0; k < cfg_.num_keywords; ++k) {
    KeywordState& st = state_[k];
    const double p = posteriors[cfg_.keyword_labels[k]];
    // 1. append, dropping the oldest when full (see kMaxHistory), then drop entries outside the window
    if (st.count == kMaxHistory) {
      st.start = (st.start + 1) % kMaxHistory;
      --st.count;
    }
    st.history[(st.start + st.count) % kMaxHistory] = Entry{now_ms, p};
    ++st.count;
    while (st.count > 1 && st.history[st.start].t_ms <= horizon) {
      st.start = (st.start + 1) % kMaxHistory;
      --st.count;
    }
    // 2. mean, summed oldest first
    double total = 0.0;
    for (int i = 0; i < st.count; ++i) total += st.history[(st.start + i) % kMaxHistory].p;
    const double score = total / st.count;
    // 3.-5.
    if (now_ms < st.quiet_until_ms) {
      st.hits = 0;
    } else if (score >= cfg_.thresholds[k]) {
      st.hits += 1;
      if (st.hits >= cfg_.min_hits) {
        if (n_events < max_events) events[n_events++] = DecisionEvent{k, score, now_ms};
        st.hits = 0;
        st.quiet_until_ms = now_ms + cfg_.refractory_ms;
      }
    } else {
      st.hits = 0;
    }
  }
  return n_events;
}

}  // namespace kws
