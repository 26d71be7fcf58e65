// PDM microphone -> ring buffer (interrupt side) -> AudioRead (loop side). Board code.
#include "audio_provider.h"

#include <Arduino.h>
#include <PDM.h>

namespace kws {
namespace {

int16_t g_ring[kAudioRingSamples];
volatile uint32_t g_write = 0;    // total samples written (only the PDM callback changes it)
volatile uint32_t g_read = 0;     // total samples read (only AudioRead changes it)
volatile uint32_t g_dropped = 0;
int16_t g_chunk[256];             // one PDM callback's worth (the core delivers 512 bytes at a time)

void OnPdmData() {
  int bytes = PDM.available();
  while (bytes > 0) {
    const int take = bytes > static_cast<int>(sizeof(g_chunk)) ? static_cast<int>(sizeof(g_chunk)) : bytes;
    PDM.read(g_chunk, take);
    bytes -= take;
    const int n = take / 2;
    for (int i = 0; i < n; ++i) {
      if (g_write - g_read >= static_cast<uint32_t>(kAudioRingSamples)) {
        ++g_dropped;  // loop() is behind: drop the newest sample, keep the stream contiguous up to here
        continue;
      }
      g_ring[g_write % kAudioRingSamples] = g_chunk[i];
      ++g_write;
    }
  }
}

}  // namespace

bool AudioBegin(int sample_rate) {
  PDM.onReceive(OnPdmData);
  PDM.setBufferSize(512);
  return PDM.begin(1, sample_rate) != 0;
}

int AudioRead(int16_t* dst, int max_samples) {
  const uint32_t available = g_write - g_read;
  const int n = available < static_cast<uint32_t>(max_samples) ? static_cast<int>(available) : max_samples;
  for (int i = 0; i < n; ++i) dst[i] = g_ring[(g_read + i) % kAudioRingSamples];
  g_read += n;
  return n;
}

int AudioBacklog() { return static_cast<int>(g_write - g_read); }

uint32_t AudioDropped() { return g_dropped; }

}  // namespace kws
