"""Benchmarks. `python -m bench` measures the gateway against its peers on fake upstreams (see __main__);
`python -m bench.llamacpp` measures the gateway's overhead and the scaling of real llama.cpp backends.
Results are written to bench/results/.
"""
