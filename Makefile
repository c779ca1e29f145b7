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
	OMP_NUM_THREADS=1 python3 benchmarks/bench_step.py --mode simulated
	OMP_NUM_THREADS=1 python3 benchmarks/bench_step.py --mode posterior --steps 4 --warmup 1 --baseline-steps 3 --phase-steps 2
	OMP_NUM_THREADS=1 python3 benchmarks/bench_step.py --mode features --steps 4 --warmup 1 --phase-steps 2
	python3 benchmarks/bench_scaling.py
