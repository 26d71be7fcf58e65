// Output: one KWS1 line per event on the USB serial port, and the LEDs. Board code.
//   RGB LED green/blue/red for 0.5 s: a detection of keyword 0/1/other; steady red: the firmware cannot run.
//   Orange LED (LED_BUILTIN): toggles on every model run.
#ifndef KWS_COMMAND_RESPONDER_H_
#define KWS_COMMAND_RESPONDER_H_

#include <stdint.h>

namespace kws {

void ResponderBegin();
void RespondToDetection(int keyword_index, const char* keyword, double score, uint32_t ms, uint32_t now_ms);
void RespondModelRun();
void RespondHello();
void RespondHeartbeat(uint32_t ms, uint32_t dropped, uint32_t skipped);
void RespondError(const char* code);
// Turns the detection LED off once its time is up; call from loop().
void ResponderUpdate(uint32_t now_ms);

}  // namespace kws

#endif  // KWS_COMMAND_RESPONDER_H_
