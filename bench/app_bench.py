"""App speed on a large user: one gallery page (48 thumbnails) cold and warm, and grouping of cached features.

(a) Gallery page, user of ``--images`` (2,000) photos of ``--photo-side`` (1024) px: server time of
    ``gallery_page`` (filter + 48 cached thumbnails) with an empty thumbnail cache (cold) and again (warm); the
    same plus Gradio's postprocessing (hashing/copying the 48 files into its cache); and the round trip through
    the running app with ``gradio_client`` (no download) next to the round trip of a trivial event, whose
    queue + SSE overhead every event pays. Target: warm page < 150 ms of server time.
(b) Grouping of ``--group-images`` (1,000) photos whose features are already cached: ``compute_grouping`` for a
    new K (hash the files, read the cached vectors, k-means with n_init=10, UMAP), after UMAP's first compile in
    this process. Target: < 5 s. The feature extraction that fills the cache is timed too, as the baseline.

Each line prints the measured time and its ratio to the target (< 1.0 meets it). Usage::

    python bench/app_bench.py [--images 2000] [--group-images 1000] [--photo-side 1024] [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from pss.api import CLASS_NAMES, Workspace, compute_grouping, create_demo_workspace, open_workspace, read_user
from pss.data.demo import DemoConfig

WARM_PAGE_TARGET_S = 0.150
GROUPING_TARGET_S = 5.0


def make_user(ws: Workspace, source_user: str, user: str, count: int, side: int, seed: int = 0) -> float:
    """Write ``count`` distinct photos (flips, crops, brightness of the demo user's images, long side ``side``)
    into ``personal/<user>``, with tags and, for labelled sources, their masks resized alike. Returns seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    sources = read_user(ws, source_user).records
    target = ws.personal / user
    (target / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (target / "SegmentationClass").mkdir(exist_ok=True)
    lines = []
    for i in range(count):
        record = sources[i % len(sources)]
        flip, gain = bool(rng.integers(2)), float(rng.uniform(0.7, 1.3))
        with Image.open(record.image_path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            scale = side / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            photo = ImageEnhance.Brightness(image.resize(size, Image.Resampling.BILINEAR)).enhance(gain)
        name = f"b{i:05d}"
        (ImageOps.mirror(photo) if flip else photo).save(target / "JPEGImages" / f"{name}.jpg", quality=90)
        if record.mask_path is not None:
            with Image.open(record.mask_path) as mask:
                mask = mask.resize(size, Image.Resampling.NEAREST)
                (ImageOps.mirror(mask) if flip else mask).save(target / "SegmentationClass" / f"{name}.png")
        tags = ",".join(CLASS_NAMES[t] for t in record.tags)
        lines.append(f"{name}.jpg:{tags or 'UNKNOWN'}")
    (target / "imgLabelList.txt").write_text("\n".join(lines) + "\n")
    return time.perf_counter() - start


def line(label: str, seconds: float, target: float | None = None) -> None:
    ratio = f"  ratio to target {seconds / target:5.2f} ({'meets' if seconds < target else 'MISSES'} "\
            f"{target * 1000:.0f} ms)" if target else ""
    print(f"{label:<72} {seconds * 1000:9.1f} ms{ratio}", flush=True)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_gallery(ws: Workspace, user: str, repeats: int) -> None:
    """Server side: the service alone, then with Gradio's postprocessing of the 48 files (what a request costs
    the server before the response is sent)."""
    from pss_app.app import serve_from_workspace
    from pss_app.services.gallery import GalleryFilter, gallery_page

    serve_from_workspace(ws)
    import gradio as gr
    from gradio import processing_utils

    shutil.rmtree(ws.thumbs, ignore_errors=True)
    read_user(ws, user)  # the listing is read once per app, not per page: keep it out of the page time
    start = time.perf_counter()
    page = gallery_page(ws, user, 1, GalleryFilter())
    cold = time.perf_counter() - start
    if len(page.items) != 48 or page.problems:
        raise RuntimeError(f"unexpected page: {len(page.items)} items, problems {page.problems[:3]}")
    warm = _median_time(lambda: gallery_page(ws, user, 1, GalleryFilter()), repeats)
    line("service: page 1, cold (48 thumbnails made)", cold)
    line(f"service: page 1, warm (median of {repeats})", warm, WARM_PAGE_TARGET_S)
    print(f"{'  cold / warm':<72} {cold / warm:9.1f} x")
    with gr.Blocks():
        component = gr.Gallery()

    def served() -> None:  # service + Gallery.postprocess + hashing/copying the files into Gradio's cache
        result = gallery_page(ws, user, 2, GalleryFilter())
        processing_utils.move_files_to_cache(component.postprocess(result.items), component, postprocess=True)

    start = time.perf_counter()
    served()
    cold = time.perf_counter() - start
    line("server (service + Gradio postprocessing): page 2, cold", cold)
    line(f"server (service + Gradio postprocessing): page 2, warm (median of {repeats})",
         _median_time(served, repeats), WARM_PAGE_TARGET_S)


def bench_gallery_client(ws: Workspace, user: str, repeats: int) -> None:
    import socket

    from gradio_client import Client

    from pss_app.app import build_app, launch_kwargs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_app(ws, default_k=8)
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_kwargs(ws, "127.0.0.1", port, None, quiet=True))
    client = Client(url, verbose=False, download_files=False)
    try:
        args = (user, 8, "all", "all", "all")
        client.predict(*args, 1, api_name="/gallery_page")  # connection and queue warm-up (page 1 is cached)
        start = time.perf_counter()
        client.predict(*args, 3, api_name="/gallery_page")
        cold = time.perf_counter() - start
        warm = _median_time(lambda: client.predict(*args, 3, api_name="/gallery_page"), repeats)
        baseline = _median_time(lambda: client.predict(user, 8, api_name="/group_filter_choices"), repeats)
        line("round trip (gradio_client): page 3, cold", cold)
        line(f"round trip (gradio_client): page 3, warm (median of {repeats})", warm)
        line(f"round trip (gradio_client): a trivial event, baseline (median of {repeats})", baseline)
        print(f"{'  page / trivial event':<72} {warm / baseline:9.1f} x   (page - trivial: "
              f"{(warm - baseline) * 1000:.1f} ms)")
    finally:
        client.close()
        demo.close()


def bench_grouping(ws: Workspace, user: str) -> None:
    for stale in (ws.cache / "groups").glob(f"{user}_k*"):  # a kept workspace: recompute, do not load results
        stale.unlink()
    start = time.perf_counter()
    first = compute_grouping(ws, user, 80, device="cpu")  # extracts and caches features; UMAP's first compile
    baseline = time.perf_counter() - start
    line(f"grouping {len(first.names)} images, first time (features + UMAP compile)", baseline)
    start = time.perf_counter()
    second = compute_grouping(ws, user, 60, device="cpu")  # new K: cached features, new k-means + UMAP
    seconds = time.perf_counter() - start
    line(f"grouping {len(second.names)} images, cached features, new K=60", seconds, GROUPING_TARGET_S)
    print(f"{'  first time / cached':<72} {baseline / seconds:9.1f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--group-images", type=int, default=1000)
    parser.add_argument("--photo-side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="pss-app-bench-"))
    try:
        if (root / "data" / "personal" / "id2").is_dir():
            ws = open_workspace(root)
        else:
            start = time.perf_counter()
            ws, _ = create_demo_workspace(root, config=DemoConfig(num_source=20, num_users=1, images_per_user=140))
            made = make_user(ws, "id1", "id2", args.images, args.photo_side)
            made += make_user(ws, "id1", "id3", args.group_images, args.photo_side, seed=1)
            print(f"workspace {root}: demo + {args.images} + {args.group_images} photos of {args.photo_side} px "
                  f"in {time.perf_counter() - start:.1f} s ({made:.1f} s writing photos)", flush=True)
        bench_gallery(ws, "id2", args.repeats)
        bench_gallery_client(ws, "id2", args.repeats)
        bench_grouping(ws, "id3")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
