// KWS1 line formatting; see kws_protocol.h and kws_edge/protocol.py.
#include "kws_protocol.h"

#include <math.h>

namespace kws {
namespace {

// Appends to a fixed buffer; remembers whether anything did not fit or was not a valid token.
class LineWriter {
 public:
  LineWriter(char* buf, size_t cap) : buf_(buf), cap_(cap) {}
  void Char(char c) {
    if (len_ + 1 < cap_ && len_ + 1 < kMaxLineLength) {
      buf_[len_++] = c;
    } else {
      ok_ = false;
    }
  }
  void Text(const char* s) {
    while (*s) Char(*s++);
  }
  void Token(const char* s) {
    Char(' ');
    if (*s == '\0') ok_ = false;
    for (; *s; ++s) {
      if (*s <= ' ' || *s == '*' || *s > '~') ok_ = false;
      Char(*s);
    }
  }
  void Unsigned(uint32_t v) {
    char digits[10];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    Char(' ');
    while (n) Char(digits[--n]);
  }
  size_t Finish() {
    const uint16_t crc = Crc16(buf_, len_);
    static const char kHex[] = "0123456789ABCDEF";
    Char('*');
    for (int shift = 12; shift >= 0; shift -= 4) Char(kHex[(crc >> shift) & 0xF]);
    Char('\r');
    Char('\n');
    if (!ok_ || cap_ == 0) {
      if (cap_) buf_[0] = '\0';
      return 0;
    }
    buf_[len_] = '\0';
    return len_;
  }

 private:
  char* buf_;
  size_t cap_;
  size_t len_ = 0;
  bool ok_ = true;
};

// score clipped to [0, 1] (NaN -> 0), in units of 0.0001, rounded as Python's f"{score:.4f}" rounds: the
// exact binary value, ties to even. (Ties are common: a mean of int8 outputs with scale 1/256 is often
// j/32, e.g. 0.90625.) score = m * 2^-k exactly (m < 2^53), so score * 10000 = (m * 625) / 2^(k - 4), and
// m * 625 < 2^63 fits in 64 bits.
uint32_t ScoreUnits(double score) {
  if (!(score > 0.0)) return 0;
  if (score >= 1.0) return 10000;
  int exponent = 0;
  const double fraction = frexp(score, &exponent);  // score = fraction * 2^exponent, fraction in [0.5, 1)
  const uint64_t m = static_cast<uint64_t>(ldexp(fraction, 53));
  const int shift = 53 - exponent - 4;  // >= 49, since score < 1
  if (shift >= 64) return 0;             // score * 10000 < 0.5
  const uint64_t scaled = m * 625u;
  const uint64_t whole = scaled >> shift;
  const uint64_t rest = scaled & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  const bool up = rest > half || (rest == half && (whole & 1u));
  return static_cast<uint32_t>(whole + (up ? 1u : 0u));
}

}  // namespace

uint16_t Crc16(const char* data, size_t length) {
  uint16_t crc = 0xFFFF;
  for (size_t i = 0; i < length; ++i) {
    crc ^= static_cast<uint16_t>(static_cast<uint8_t>(data[i]) << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

size_t FormatHello(char* buf, size_t cap, const char* fw_version, const char* model_sha8,
                   const char* model_name) {
  LineWriter w(buf, cap);
  w.Text("KWS1 HELLO");
  w.Token(fw_version);
  w.Token(model_sha8);
  w.Token(model_name);
  return w.Finish();
}

size_t FormatDetection(char* buf, size_t cap, const char* keyword, double score, uint32_t ms) {
  LineWriter w(buf, cap);
  w.Text("KWS1 DET");
  w.Token(keyword);
  const uint32_t units = ScoreUnits(score);
  char text[7] = {static_cast<char>('0' + units / 10000), '.',
                  static_cast<char>('0' + units / 1000 % 10), static_cast<char>('0' + units / 100 % 10),
                  static_cast<char>('0' + units / 10 % 10), static_cast<char>('0' + units % 10), '\0'};
  w.Token(text);
  w.Unsigned(ms);
  return w.Finish();
}

size_t FormatHeartbeat(char* buf, size_t cap, uint32_t ms, uint32_t dropped, uint32_t skipped) {
  LineWriter w(buf, cap);
  w.Text("KWS1 HB");
  w.Unsigned(ms);
  w.Unsigned(dropped);
  w.Unsigned(skipped);
  return w.Finish();
}

size_t FormatError(char* buf, size_t cap, const char* code) {
  LineWriter w(buf, cap);
  w.Text("KWS1 ERR");
  w.Token(code);
  return w.Finish();
}

}  // namespace kws
