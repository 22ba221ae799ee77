"""The writing side: the worker wrapper, the coalescing writer and the broadcast sender thread."""
