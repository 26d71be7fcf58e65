// Stand-ins for the Nano 33 BLE Sense board under QEMU: the sketch's audio_provider.h over a file (instead
// of the PDM microphone), Arduino's millis/Serial/LEDs. Everything else the program runs is the sketch's
// own code.
#include <stdio.h>

#include "Arduino.h"
#include "audio_provider.h"
#include "nano_standin.h"

namespace {

FILE* g_file = nullptr;
bool g_done = false;
uint64_t g_read = 0;
int g_rate = 0;

}  // namespace

namespace kws_standin {

bool OpenAudio(const char* path) {
  g_file = fopen(path, "rb");
  return g_file != nullptr;
}

bool AudioDone() { return g_done; }
uint64_t SamplesRead() { return g_read; }
int AudioSampleRate() { return g_rate; }

}  // namespace kws_standin

namespace kws {

bool AudioBegin(int sample_rate) {
  g_rate = sample_rate;
  return g_file != nullptr && sample_rate > 0;
}

int AudioRead(int16_t* dst, int max_samples) {
  if (g_file == nullptr || g_done || max_samples <= 0) return 0;
  const size_t n = fread(dst, sizeof(int16_t), static_cast<size_t>(max_samples), g_file);
  if (n == 0) g_done = true;
  g_read += n;
  return static_cast<int>(n);
}

int AudioBacklog() { return 0; }
uint32_t AudioDropped() { return 0; }

}  // namespace kws

SerialPort Serial;

void SerialPort::begin(unsigned long) {}

size_t SerialPort::write(const char* data, size_t length) { return fwrite(data, 1, length, stdout); }

size_t SerialPort::write(const uint8_t* data, size_t length) {
  return fwrite(data, 1, length, stdout);
}

uint32_t millis() { return g_rate ? static_cast<uint32_t>(g_read * 1000 / static_cast<uint64_t>(g_rate)) : 0; }

void pinMode(int, int) {}
void digitalWrite(int, int) {}
