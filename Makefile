# The two commands of the README. Both install what they need themselves (scripts/bootstrap.sh).
.PHONY: up test bench bootstrap

TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

# Two llama.cpp backends with the embedded model, the gateway in front of them, and the chat app.
up:
	@scripts/bootstrap.sh
	@.venv/bin/python -m scripts.stack

# The whole test suite, end-to-end tests against real llama.cpp and PostgreSQL included.
test:
	@scripts/bootstrap.sh --browser
	@.venv/bin/python -m pytest $(PYTEST_ARGS)

bench:
	@scripts/bootstrap.sh
	@.venv/bin/python -m bench $(BENCH_ARGS)

bootstrap:
	@scripts/bootstrap.sh --browser
