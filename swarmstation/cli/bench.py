"""`swarmstation bench`, `bench-loras`, `bench-routing`: the benchmarks of swarmstation/bench/,
each printing its figures as JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmstation.cli.common import DbOpt, err

app = typer.Typer()


@app.command()
def bench(
    workers: Annotated[int, typer.Option("--workers", min=1, max=1000)] = 16,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=100_000)] = 2000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=512, help="Clients in a closed loop")
    ] = 16,
    database_url: DbOpt = None,
    lean: Annotated[
        bool,
        typer.Option(
            "--lean",
            help="Play the worker protocol for every instance from one asyncio process (no worker "
            "agents, no emulators), so that the control plane is what saturates",
        ),
    ] = False,
    idle: Annotated[
        bool,
        typer.Option(
            "--idle",
            help="Measure the idle cost instead: --workers lean instances heartbeating and polling, "
            "nothing queued, the control plane's CPU % of one core over --idle-seconds",
        ),
    ] = False,
    idle_seconds: Annotated[float, typer.Option("--idle-seconds", min=1, max=3600)] = 30.0,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Measure memory instead: the database seeded with --finished and --queued jobs, "
            "--workers lean instances heartbeating, one real worker; resident memory loaded, over a "
            "burst of large reads and after it",
        ),
    ] = False,
    finished: Annotated[int, typer.Option("--finished", min=0, max=10_000_000)] = 100_000,
    queued: Annotated[int, typer.Option("--queued", min=0, max=1_000_000)] = 10_000,
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            min=1,
            max=16,
            help="With --lean and a PostgreSQL --database-url: N serve processes on one fresh schema "
            "behind one address (a round-robin TCP proxy, its own process); with N > 1 a one-replica "
            "run behind the same proxy first, and the ratio",
        ),
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="--replicas N > 1: the one-replica run first")
    ] = True,
    floor: Annotated[
        bool,
        typer.Option(
            "--floor",
            help="Measure the per-request floor instead: the control plane's CPU per request of the "
            "cheapest kinds (a health check, a user's read, a worker's heartbeat), --requests of each",
        ),
    ] = False,
    requests: Annotated[int, typer.Option("--requests", min=10, max=1_000_000)] = 2000,
    users: Annotated[
        int,
        typer.Option(
            "--users",
            min=1,
            max=512,
            help="--replicas: the clients submit as this many users in turn (one user's account is "
            "locked by each of its submissions and completions)",
        ),
    ] = 1,
) -> None:
    """Control-plane throughput, overhead, CPU and memory with workers that take no time (prints JSON)."""
    from swarmstation.bench import control_plane, print_result

    options = control_plane.Options(
        workers=workers,
        jobs=jobs,
        concurrency=concurrency,
        database_url=database_url,
        lean=lean,
        idle_seconds=idle_seconds if idle else None,
        finished=finished,
        queued=queued,
        baseline=baseline,
        users=users,
        requests=requests,
    )
    if sum((idle, memory, floor)) > 1:
        raise typer.BadParameter("--idle, --memory and --floor are separate measurements: give one")
    if users > 1 and replicas is None:
        raise typer.BadParameter("--users goes with --replicas")
    if replicas is not None:
        if not lean or idle or memory or floor:
            raise typer.BadParameter(
                "--replicas runs the lean load: add --lean (not --idle, --memory or --floor)"
            )
        try:
            print_result(control_plane.run_replicas(options, replicas, progress=err))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        return
    if floor:
        print_result(control_plane.run_floor(options))
        return
    if memory:
        print_result(control_plane.run_memory(options))
        return
    if idle:
        print_result(control_plane.run_idle(options))
        return
    print_result(control_plane.run(options, progress=err))


@app.command("bench-loras")
def bench_loras(
    prompts: Annotated[int, typer.Option("--prompts", min=1, max=100_000)] = 200,
    loras: Annotated[int, typer.Option("--loras", min=1, max=1_000_000)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """LoRA resolution time per 200-word prompt against a large synthetic registry (prints JSON)."""
    from swarmstation.bench import loras as lora_bench
    from swarmstation.bench import print_result

    print_result(lora_bench.run(prompts=prompts, loras=loras, seed=seed))


@app.command("bench-routing")
def bench_routing(
    instances: Annotated[int, typer.Option("--instances", min=1, max=100_000)] = 1000,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=1_000_000)] = 10_000,
    models: Annotated[int, typer.Option("--models", min=1, max=100_000)] = 300,
    passes: Annotated[int, typer.Option("--passes", min=1, max=1000)] = 20,
    free_fraction: Annotated[float, typer.Option("--free-fraction", min=0.0, max=1.0)] = 0.15,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Routing cost per assignment with many instances and a long queue (prints JSON)."""
    from swarmstation.bench import print_result, routing

    print_result(
        routing.run(
            instances=instances,
            jobs=jobs,
            models=models,
            seed=seed,
            passes=passes,
            free_fraction=free_fraction,
        )
    )
