// KWS1, the line protocol from the board to the Pi. The specification is in kws_edge/protocol.py; this is
// the board's side (formatting only). Portable C++: no Arduino, no printf (newlib-nano has no %lld/%f).
//   KWS1 HELLO <fw_version> <model_sha8> <model_name>*XXXX
//   KWS1 DET <keyword> <score 0.0000-1.0000> <ms>*XXXX
//   KWS1 HB <ms> <dropped> <skipped>*XXXX
//   KWS1 ERR <code>*XXXX
// XXXX = CRC-16/CCITT-FALSE of everything before '*', four upper-case hex digits; lines end in "\r\n".
#ifndef KWS_PROTOCOL_H_
#define KWS_PROTOCOL_H_

#include <stddef.h>
#include <stdint.h>

namespace kws {

constexpr size_t kMaxLineLength = 128;  // bytes including "\r\n"; the Pi drops longer lines

// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor.
uint16_t Crc16(const char* data, size_t length);

// Each returns the line length written to buf (terminated, "\r\n" included) or 0 if it does not fit or a
// token is empty or contains a space, '*' or a control character.
size_t FormatHello(char* buf, size_t cap, const char* fw_version, const char* model_sha8,
                   const char* model_name);
size_t FormatDetection(char* buf, size_t cap, const char* keyword, double score, uint32_t ms);
size_t FormatHeartbeat(char* buf, size_t cap, uint32_t ms, uint32_t dropped, uint32_t skipped);
size_t FormatError(char* buf, size_t cap, const char* code);

}  // namespace kws

#endif  // KWS_PROTOCOL_H_
