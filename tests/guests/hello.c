/* hello: the smallest guest. Prints one line and exits with status 0. */
#include "rt.h"

int main(void)
{
	rt_puts("hello from tern guest\n");
	return RT_EXIT_OK;
}
