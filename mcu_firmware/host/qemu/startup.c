/* Vector table and reset handler for the QEMU mps2-an386 test harness: enable the FPU, then hand over to
   newlib's _start (rdimon crt0: zeroes .bss, gets argv over semihosting, calls main, exits). */
#include <stdint.h>

extern void _start(void);
extern uint32_t _estack;

void Reset_Handler(void) {
  volatile uint32_t* cpacr = (volatile uint32_t*)0xE000ED88;
  *cpacr |= 0xFu << 20; /* CP10, CP11 full access: the single-precision FPU */
  __asm volatile("dsb\n isb");
  _start();
  for (;;) {
  }
}

static void Fault_Handler(void) {
  for (;;) {
  }
}

/* A program that counts SysTick wraps defines its own handler. */
void SysTick_Handler(void) __attribute__((weak, alias("Fault_Handler")));

__attribute__((section(".vectors"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler,
    SysTick_Handler,
};
