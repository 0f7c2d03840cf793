// SPDX-License-Identifier: GPL-2.0
// The second release of tracepoint_counter.bpf.c: the same function and map, other code (it
// counts in steps of two), so that the image tests can move a tag to a program whose kernel tag
// (a hash of its instructions, shown by bpftool) differs.
#define STEP 2
#include "tracepoint_counter.bpf.c"
