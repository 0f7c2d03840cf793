// A container's process for the container-selector tests: calls bpfman_probe_me() ten times a
// second until it is killed. Linked statically, so it is the whole of a FROM-scratch image.
#include <time.h>

__attribute__((noinline)) int bpfman_probe_me(int i)
{
	__asm__ volatile("" ::: "memory");  // keep the call from being optimised away
	return i + 1;
}

int main(void)
{
	struct timespec tick = {0, 100 * 1000 * 1000};

	for (int i = 0;; i++) {
		bpfman_probe_me(i);
		nanosleep(&tick, 0);
	}
}
