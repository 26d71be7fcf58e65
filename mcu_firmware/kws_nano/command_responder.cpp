// KWS1 lines on Serial and LED feedback; see command_responder.h.
#include "command_responder.h"

#include <Arduino.h>

#include "kws_protocol.h"
#include "model_settings.h"

namespace kws {
namespace {

constexpr uint32_t kLedOnMs = 500;
uint32_t g_led_off_at = 0;
bool g_led_on = false;
bool g_builtin = false;

// The RGB LED of the Nano 33 BLE Sense is active low.
void SetRgb(bool r, bool g, bool b) {
  digitalWrite(LEDR, r ? LOW : HIGH);
  digitalWrite(LEDG, g ? LOW : HIGH);
  digitalWrite(LEDB, b ? LOW : HIGH);
}

void Send(const char* line, size_t length) {
  if (length == 0) return;
  // With no host attached the mbed core's USB serial drops what is written instead of blocking.
  Serial.write(line, length);
}

}  // namespace

void ResponderBegin() {
  pinMode(LED_BUILTIN, OUTPUT);
  pinMode(LEDR, OUTPUT);
  pinMode(LEDG, OUTPUT);
  pinMode(LEDB, OUTPUT);
  SetRgb(false, false, false);
}

void RespondToDetection(int keyword_index, const char* keyword, double score, uint32_t ms, uint32_t now_ms) {
  char line[kMaxLineLength];
  Send(line, FormatDetection(line, sizeof(line), keyword, score, ms));
  SetRgb(keyword_index >= 2, keyword_index == 0, keyword_index == 1);
  g_led_on = true;
  g_led_off_at = now_ms + kLedOnMs;
}

void RespondModelRun() {
  g_builtin = !g_builtin;
  digitalWrite(LED_BUILTIN, g_builtin ? HIGH : LOW);
}

void RespondHello() {
  char line[kMaxLineLength];
  Send(line, FormatHello(line, sizeof(line), kws_model::kFirmwareVersion, kws_model::kModelSha8,
                         kws_model::kModelName));
}

void RespondHeartbeat(uint32_t ms, uint32_t dropped, uint32_t skipped) {
  char line[kMaxLineLength];
  Send(line, FormatHeartbeat(line, sizeof(line), ms, dropped, skipped));
}

void RespondError(const char* code) {
  char line[kMaxLineLength];
  Send(line, FormatError(line, sizeof(line), code));
  SetRgb(true, false, false);
}

void ResponderUpdate(uint32_t now_ms) {
  if (g_led_on && static_cast<int32_t>(now_ms - g_led_off_at) >= 0) {
    SetRgb(false, false, false);
    g_led_on = false;
  }
}

}  // namespace kws
