"""``python -m benchmarks.run``: the step throughput / latency benchmark (see step_throughput)."""
from benchmarks.step_throughput import main

if __name__ == "__main__":
    main()
