# The two commands of the README. Both install what they need themselves (scripts/bootstrap.sh).
.PHONY: up test bench bench-llamacpp bench-scaling bench-affinity bootstrap

TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

# Two llama.cpp backends with the embedded model, the gateway in front of them, and the chat app.
up:
	@scripts/bootstrap.sh
	@.venv/bin/python -m scripts.stack

# The whole test suite, end-to-end tests against real llama.cpp and PostgreSQL included.
test:
	@scripts/bootstrap.sh --test
	@.venv/bin/python -m pytest $(PYTEST_ARGS)

# The gateway against the limit and its peers (sglang-router, LiteLLM) on fake upstreams; see README.
bench:
	@scripts/bootstrap.sh --bench
	@.venv/bin/python -m bench $(BENCH_ARGS)

# Real llama.cpp: llama-server vs llama-cpp-python under many chats, and affinity vs round robin on llama-server.
bench-llamacpp:
	@scripts/bootstrap.sh
	@.venv/bin/python -m bench.llamacpp $(BENCH_ARGS)

# Real llama.cpp (llama-cpp-python): the gateway's overhead, and what a second backend buys.
bench-scaling:
	@scripts/bootstrap.sh
	@.venv/bin/python -m bench.scaling $(BENCH_ARGS)

bench-affinity:
	@scripts/bootstrap.sh
	@.venv/bin/python -m bench.affinity $(BENCH_ARGS)

bootstrap:
	@scripts/bootstrap.sh --test
