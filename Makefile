.PHONY: setup test test-slow lint bench
setup:
	bash launch/setup.sh --dev
test:
	python3 -m pytest -q
test-slow:
	python3 -m pytest -q -m slow
lint:
	ruff check tasu tests benchmarks
bench:
	OMP_NUM_THREADS=1 python3 benchmarks/bench_kernels.py --device cpu
	OMP_NUM_THREADS=1 python3 benchmarks/bench_loader.py
	for m in simulated posterior features; do OMP_NUM_THREADS=1 python3 benchmarks/bench_step.py --mode $$m; done
	python3 benchmarks/bench_scaling.py
