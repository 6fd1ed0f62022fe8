"""Where the model pass's time goes on CUDA, and what its alternatives cost (#16: under 9 ms).

    uv run python benchmarks/investigations/model_pass.py --runs 30 [--variants] [--compile default] [--trace DIR]

Full-size random weights (the time does not depend on the values), one 512² image, the fast
path's policy. Prints, as median ms of warm runs (CUDA events around each call):

- the pass eager and replayed as a CUDA graph (the product's way), and its parts eager (ViT,
  transformer, post-processor);
- the kernels that take the most device time in one eager pass (torch.profiler);
- variants, each replayed as a graph: each attention backend PyTorch offers, bf16 products, the
  residual stream in fp16 as well, and (with --compile) torch.compile's code, with its compile time.

A variant's numbers are not checked here; only its time. The scene codes' distance from the
product's pass is printed so a fast but wrong variant shows.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from image_to_3d_dev.timing import event_ms
from remote.precision import FAST, apply_policy
from remote.triposr.cuda_graph import GraphedModel
from remote.triposr.weights import build_random_model


def wall_ms(function: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time in ms including the host's launch work (synchronised around each run)."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def graphed_ms(
    model: torch.nn.Module, images: torch.Tensor, runs: int, context=nullcontext
) -> tuple[float, torch.Tensor]:
    with context():
        graphed = GraphedModel(model)
        codes = graphed(images)
        return wall_ms(lambda: graphed(images), runs), codes


def distance(codes: torch.Tensor, reference: torch.Tensor) -> float:
    """Max absolute difference relative to the reference's largest magnitude."""
    return float((codes.float() - reference.float()).abs().max() / reference.float().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--compile", nargs="*", default=[], help="also time torch.compile's code in these modes (slow to compile)"
    )
    parser.add_argument("--variants", action="store_true", help="also time the attention, dtype and stream variants")
    parser.add_argument("--trace", default=None, help="folder for a Chrome trace of one eager pass")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = apply_policy(build_random_model(device=device, dtype=torch.float32), FAST).eval()
    images = torch.rand(1, 512, 512, 3, device=device, generator=torch.Generator(device).manual_seed(0))
    report: dict[str, object] = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}

    with torch.inference_mode():
        pixels = model.preprocess(images)
        report["eager_ms"] = wall_ms(lambda: model.encode(pixels), args.runs)
        report["eager_device_ms"] = event_ms(lambda: model.encode(pixels), args.runs)
        report["graph_ms"], reference = graphed_ms(model, images, args.runs)
        report["preprocess_resize_ms"] = event_ms(lambda: model.preprocess(images), args.runs)

        dtype = model.tokenizer.embeddings.dtype
        image_tokens = model.image_tokenizer(pixels).to(dtype)
        tokens = model.tokenizer(1)
        out = model.backbone(tokens, image_tokens)
        planes = model.tokenizer.detokenize(out)
        report["parts_device_ms"] = {
            "vit": event_ms(lambda: model.image_tokenizer(pixels), args.runs),
            "transformer": event_ms(lambda: model.backbone(tokens, image_tokens), args.runs),
            "post_processor": event_ms(lambda: model.post_processor(planes), args.runs),
        }
        print(json.dumps(report), flush=True)

        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.encode(pixels)
            torch.cuda.synchronize()
        averages = prof.key_averages()
        sort_key = "device_time_total" if hasattr(averages[0], "device_time_total") else "cuda_time_total"
        print(averages.table(sort_by=sort_key, row_limit=30, max_name_column_width=90), flush=True)
        if args.trace:
            prof.export_chrome_trace(f"{args.trace}/model_pass_trace.json")

        variants: dict[str, object] = {}
        backends = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH") if args.variants else ()
        for backend in backends:
            try:
                ms, codes = graphed_ms(model, images, args.runs, lambda b=backend: sdpa_kernel(getattr(SDPBackend, b)))
                variants[f"attention_{backend.lower()}"] = {"graph_ms": ms, "distance": distance(codes, reference)}
            except Exception as error:  # noqa: BLE001 - a backend this GPU or build does not offer
                variants[f"attention_{backend.lower()}"] = f"{type(error).__name__}: {str(error)[:200]}"
            print(json.dumps(variants), flush=True)

    if args.variants:
        torch.set_grad_enabled(False)  # as inference mode above: nothing here needs gradients
        bf16 = copy.deepcopy(model)
        apply_policy(bf16, FAST.__class__(**{**FAST.__dict__, "matmul_dtype": "bfloat16"}))
        ms, codes = graphed_ms(bf16, images, args.runs)
        variants["bf16_products"] = {"graph_ms": ms, "distance": distance(codes, reference)}
        del bf16

        half_stream = copy.deepcopy(model).half()
        ms, codes = graphed_ms(half_stream, images.half(), args.runs)
        variants["fp16_stream_and_norms"] = {"graph_ms": ms, "distance": distance(codes, reference)}
        del half_stream
        print(json.dumps(variants), flush=True)

    if args.compile:
        for mode in args.compile:
            compiled = copy.deepcopy(model)
            start = time.perf_counter()
            compiled.encode = torch.compile(compiled.encode, mode=mode)
            with torch.inference_mode():
                compiled.encode(pixels)
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - start
                try:
                    ms, codes = graphed_ms(compiled, images, args.runs)
                    variants[f"compile_{mode}"] = {
                        "graph_ms": ms,
                        "eager_ms": wall_ms(lambda: compiled.encode(pixels), args.runs),
                        "compile_s": compile_s,
                        "distance": distance(codes, reference),
                    }
                except Exception as error:  # noqa: BLE001 - e.g. a graph break that cannot be captured
                    variants[f"compile_{mode}"] = f"{type(error).__name__}: {str(error)[:300]}"
            print(json.dumps(variants), flush=True)
            del compiled
    report["variants"] = variants
    print(json.dumps(report))


if __name__ == "__main__":
    main()
