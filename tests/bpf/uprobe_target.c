// A tiny user-space binary for uprobe tests: calls bpfman_probe_me() argv[1] times.
#include <stdlib.h>

__attribute__((noinline)) int bpfman_probe_me(int i)
{
	__asm__ volatile("" ::: "memory");  // keep the call from being optimised away
	return i + 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1, sum = 0;

	for (int i = 0; i < n; i++)
		sum += bpfman_probe_me(i);
	return sum == 0 ? 0 : 0;
}
