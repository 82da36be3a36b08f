#!/usr/bin/env python3
"""edgekit's latency runner: times one .tflite, .onnx or .pte file where it runs and prints one JSON line.

This file is copied as-is to boards (SSH) and run in a fresh process on the host, so it must stay
self-contained: the standard library, numpy and whichever runtime the machine has (``ai_edge_litert``,
``tflite_runtime``, ``onnxruntime`` or ``executorch``). No edgekit imports, Python 3.8 syntax; no PyTorch, except
for a .pte file, whose runtime takes torch tensors.

    python3 runner.py --probe                       # what this machine has
    python3 runner.py --model m.tflite --threads 2 --runs 100 --warmup 10

The last stdout line starting with ``EDGEKIT_RESULT `` carries the JSON; anything else a runtime prints is
ignored by the caller. Exit status 0 = measured, 3 = a problem the JSON describes.
"""

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import time

RESULT_MARK = "EDGEKIT_RESULT "
EXIT_PROBLEM = 3

TFLITE_MODULES = (("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
                  ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"))
ONNX_MODULES = (("onnxruntime", "onnxruntime", "onnxruntime"),)
PTE_MODULES = (("executorch", "executorch.runtime", "executorch"),)


def emit(payload, status=0):
    sys.stdout.write(RESULT_MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()
    sys.exit(status)


def problem(kind, message, **details):
    details.update(kind=kind, message=message)
    emit({"error": details}, EXIT_PROBLEM)


def _status_kb(field):
    """A ``VmHWM``/``VmRSS`` line of /proc/self/status in kB (Linux, Android)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb():
    kb = _status_kb("VmHWM")
    if kb is None:
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if sys.platform == "darwin":  # bytes there, kB on Linux
                kb //= 1024
        except (ImportError, OSError):
            return None
    return round(kb / 1024.0, 2)


def current_rss_mb():
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024.0, 2)


def module_version(distribution, module):
    try:
        from importlib import metadata

        return metadata.version(distribution)
    except Exception:  # importlib.metadata missing (3.7) or the package has no metadata
        return getattr(module, "__version__", None)


def available_runtimes():
    """Runtimes importable here, found without importing them (an import can take seconds on a board)."""
    import importlib.util

    found = {}
    for top, _, dist in TFLITE_MODULES + ONNX_MODULES + PTE_MODULES:
        try:
            if importlib.util.find_spec(top) is not None:
                found[top] = module_version(dist, None)
        except (ImportError, ValueError):
            pass
    return found


# The CPU features that decide int8 speed and exactness. x86: VNNI (AVX-512 or AVX) and AMX accumulate 8-bit
# products in int32; plain AVX2/AVX-512 add pairs in saturating int16 (ONNX Runtime's U8S8 kernels) and are no
# faster in int8 than in fp32 (XNNPACK). ARM: asimddp (sdot/udot, ARMv8.2+) and i8mm (smmla) are the int8 dot
# products; plain NEON widens to 16 bits, exact but slower.
INT8_FEATURES = {"x86": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
                 "arm": ("asimd", "asimddp", "i8mm", "sve")}
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_info(cpuinfo_text=None):
    """Vendor, model and the int8-relevant features of a CPU, from /proc/cpuinfo (Linux and Android, x86 and
    ARM): this machine's, or the text another device's cat /proc/cpuinfo printed. ``features`` lists those
    present; ``int8_dot_product`` is None where the kernel does not say."""
    local = cpuinfo_text is None
    if local:
        try:
            with open("/proc/cpuinfo", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            cpuinfo_text = ""
    fields = {}
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    family = "arm" if "Features" in fields or "CPU implementer" in fields else "x86"
    if local:
        arch = platform.machine()
    elif family == "arm":
        arch = "aarch64" if fields.get("CPU architecture", "8") == "8" else "armv7l"
    else:
        arch = "x86_64" if "lm" in flags else "i686"
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or fields.get("CPU part")
    vendor = fields.get("vendor_id") or fields.get("CPU implementer")
    return {"vendor": vendor, "model": model, "arch": arch,
            "features": [f for f in INT8_FEATURES[family] if f in flags],
            "int8_dot_product": any(f in flags for f in INT8_DOT_PRODUCT) if flags else None}


def machine_info():
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "release": platform.release(), "cpu_count": os.cpu_count(), "hostname": platform.node(),
            "cpu": cpu_info()}


def probe():
    info = machine_info()
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
    info["runtimes"] = available_runtimes()
    emit(info)


def random_array(rng, np, shape, dtype):
    """Input data of the model's own dtype and shape: full integer range for 8/16-bit, [-1, 1) for floats."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    # Wider integers are usually indices or lengths, where random values would be out of range.
    return np.zeros(shape, dtype=dtype)


class TFLiteSession:
    """LiteRT or tflite_runtime; ``invoke`` alone is timed, as LiteRT's benchmark_model does."""

    def __init__(self, path, threads, np, rng, preferred):
        modules = [m for m in TFLITE_MODULES if preferred in ("auto", m[0])]
        interpreter_cls, self.runtime = None, None
        for top, name, dist in modules:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            interpreter_cls = module.Interpreter
            self.runtime = {"name": top, "version": module_version(dist, importlib.import_module(top))}
            break
        if interpreter_cls is None:
            names = " or ".join(m[2] for m in modules)
            problem("no_runtime", "no TFLite runtime in this Python", install=names)
        self.baseline_rss_mb = current_rss_mb()
        started = time.perf_counter()
        try:
            self.interpreter = interpreter_cls(model_path=path, num_threads=threads)
            inputs = self.interpreter.get_input_details()
            for detail in inputs:  # a dynamic batch (-1) is benchmarked at batch 1
                signature = detail.get("shape_signature", detail["shape"])
                if any(int(d) < 0 for d in signature):
                    fixed = [1 if int(d) < 0 else int(d) for d in signature]
                    self.interpreter.resize_tensor_input(detail["index"], fixed)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            problem("load_failed", "the runtime cannot load the model: %s" % str(e).strip().splitlines()[0])
        self.load_ms = (time.perf_counter() - started) * 1000.0
        self.inputs = []
        for detail in self.interpreter.get_input_details():
            data = random_array(rng, np, tuple(int(d) for d in detail["shape"]), detail["dtype"])
            self.interpreter.set_tensor(detail["index"], data)
            self.inputs.append({"name": detail["name"], "shape": [int(d) for d in data.shape],
                                "dtype": np.dtype(detail["dtype"]).name})

    def run(self):
        self.interpreter.invoke()


class OnnxSession:
    """ONNX Runtime on the CPU provider; ``session.run`` is timed (its API has no separate invoke)."""

    TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int16)": "int16",
             "tensor(uint16)": "uint16", "tensor(int32)": "int32", "tensor(int64)": "int64",
             "tensor(bool)": "bool"}

    def __init__(self, path, threads, np, rng, preferred):
        try:
            import onnxruntime as ort
        except ImportError:
            problem("no_runtime", "no ONNX runtime in this Python", install="onnxruntime")
        self.runtime = {"name": "onnxruntime", "version": ort.__version__}
        self.baseline_rss_mb = current_rss_mb()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception classes for bad files
            problem("load_failed", "the runtime cannot load the model: %s" % str(e).strip().splitlines()[0][:300])
        self.load_ms = (time.perf_counter() - started) * 1000.0
        self.feeds, self.inputs = {}, []
        for i in self.session.get_inputs():
            if i.type not in self.TYPES:
                problem("unsupported_input", "input %s has type %s, which the runner cannot fill" % (i.name, i.type))
            # Symbolic dimensions (batch "N") are benchmarked at 1.
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in i.shape)
            self.feeds[i.name] = random_array(rng, np, shape, self.TYPES[i.type])
            self.inputs.append({"name": i.name, "shape": list(shape), "dtype": self.TYPES[i.type]})

    def run(self):
        self.session.run(None, self.feeds)


class without_executorch_compiler(object):
    """ExecuTorch's runtime bindings import ``executorch.exir`` for one warning class, and that package's
    ``__init__`` loads the whole compiler: 3-5 s of every process that only runs a .pte (this runner's, and
    edgekit's validate and eval: edgekit/runtimes.py uses this too). While the runtime imports,
    ``executorch.exir`` is an empty package over the same folder, so its submodules load and its ``__init__``
    does not; afterwards both leave ``sys.modules``, so a process that later wants the compiler imports it whole."""

    def __enter__(self):
        import types

        self.placed = None
        if "executorch.exir" not in sys.modules:
            try:
                import executorch

                package = types.ModuleType("executorch.exir")
                package.__path__ = [os.path.join(path, "exir") for path in executorch.__path__]
                sys.modules["executorch.exir"] = self.placed = package
            except ImportError:
                pass
        return self

    def __exit__(self, *exc):
        if self.placed is not None and sys.modules.get("executorch.exir") is self.placed:
            del sys.modules["executorch.exir"]
            sys.modules.pop("executorch.exir._warnings", None)
        return False


def executorch_runtime():
    """ExecuTorch's Python runtime, (``portable_lib``, ``Runtime``), imported without its compiler where the
    bindings allow it (this runner and edgekit/runtimes.py)."""
    try:
        with without_executorch_compiler():
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
    except ImportError:  # bindings that need more of the compiler package: import it whole
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    return portable_lib, Runtime


class PteSession:
    """An ExecuTorch program (.pte) in ExecuTorch's Python runtime (``executorch.runtime``), which takes torch
    tensors: this is the one runtime that brings PyTorch into the measuring process. ``execute`` is timed."""

    DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
              7: "float64", 11: "bool"}

    def __init__(self, path, threads, np, rng, preferred):
        try:
            import torch
            portable_lib, Runtime = executorch_runtime()
        except ImportError:
            problem("no_runtime", "no ExecuTorch runtime in this Python", install="executorch")
        self.runtime = {"name": "executorch", "version": module_version("executorch", None)}
        self.baseline_rss_mb = current_rss_mb()
        portable_lib._unsafe_reset_threadpool(threads)  # the only thread knob its Python API has
        started = time.perf_counter()
        try:
            program = Runtime.get().load_program(path)
            self.method = program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            problem("load_failed", "the runtime cannot load the model: %s" % str(e).strip().splitlines()[0][:300])
        self.load_ms = (time.perf_counter() - started) * 1000.0
        names = self._input_names(program, np)
        meta = self.method.metadata
        self.feeds, self.inputs = [], []
        for i in range(meta.num_inputs()):
            tensor = meta.input_tensor_meta(i)
            dtype = self.DTYPES.get(int(tensor.dtype()))
            if dtype is None:
                problem("unsupported_input", "input %d has type %s, which the runner cannot fill" % (i, tensor.dtype()))
            shape = tuple(int(d) for d in tensor.sizes())
            self.feeds.append(torch.from_numpy(random_array(rng, np, shape, dtype)))
            self.inputs.append({"name": names[i] if i < len(names) else "input_%d" % i, "shape": list(shape),
                                "dtype": dtype})

    @staticmethod
    def _input_names(program, np):
        """The input names edgekit's metadata method records (edgekit.runtimes.program_metadata; a program keeps
        no tensor names of its own); [] for a program without them."""
        try:
            if "edgekit_metadata" not in program.method_names:
                return []
            (payload,) = program.load_method("edgekit_metadata").execute([])
            record = json.loads(bytes(payload.numpy().astype(np.uint8)).decode("utf-8"))
            return list((record.get("io") or {}).get("inputs") or ["image"])
        except Exception:  # unreadable metadata only costs the names
            return []

    def run(self):
        self.method.execute(self.feeds)


def measure(args):
    try:
        import numpy as np
    except ImportError:
        problem("no_numpy", "numpy is missing in this Python", install="numpy")
    if not os.path.isfile(args.model):
        problem("missing_model", "model file %s does not exist" % args.model)
    rng = np.random.default_rng(args.seed)
    suffix = os.path.splitext(args.model)[1].lower()
    session_cls = {".tflite": TFLiteSession, ".onnx": OnnxSession, ".pte": PteSession}.get(suffix)
    if session_cls is None:
        problem("unsupported_format", "unsupported model file %s (.tflite, .onnx or .pte)" % os.path.basename(args.model))
    session = session_cls(args.model, args.threads, np, rng, args.tflite_runtime)

    def timed():
        started = time.perf_counter_ns()
        session.run()
        return (time.perf_counter_ns() - started) / 1e6

    try:
        first_ms = timed()
        for _ in range(args.warmup):
            session.run()
        # The collector would otherwise add its pauses to random samples.
        gc.disable()
        samples = [timed() for _ in range(args.runs)]
        gc.enable()
    except (RuntimeError, ValueError) as e:
        problem("run_failed", "inference failed: %s" % str(e).strip().splitlines()[0][:300])
    result = {
        "runtime": session.runtime, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "load_ms": round(session.load_ms, 4), "first_ms": round(first_ms, 4),
        "samples_ms": [round(s, 4) for s in samples],
        "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": session.baseline_rss_mb,
        "inputs": session.inputs, "machine": machine_info(), "numpy": np.__version__,
        # Lets the caller prove the measuring process held no PyTorch.
        "heavy_modules_loaded": sorted(m for m in ("torch", "tensorflow", "jax") if m in sys.modules),
    }
    emit(result)


def main(argv=None):
    parser = argparse.ArgumentParser(description="time one .tflite/.onnx model (edgekit latency runner)")
    parser.add_argument("--probe", action="store_true", help="report Python, numpy and the runtimes found")
    parser.add_argument("--model", help="the .tflite or .onnx file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tflite-runtime", default="auto", choices=("auto", "ai_edge_litert", "tflite_runtime"))
    args = parser.parse_args(argv)
    if args.probe:
        probe()
    if not args.model:
        parser.error("--model is required (or --probe)")
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--threads and --runs must be at least 1, --warmup at least 0")
    measure(args)


if __name__ == "__main__":
    # The script's folder holds edgekit's device modules; keep them from shadowing anything a runtime imports.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    main()
