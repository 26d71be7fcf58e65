// setup() and loop() of the sketch (called by the Arduino core), as in TFLM's micro_speech.
#ifndef KWS_MAIN_FUNCTIONS_H_
#define KWS_MAIN_FUNCTIONS_H_

void setup();
void loop();

#endif  // KWS_MAIN_FUNCTIONS_H_
