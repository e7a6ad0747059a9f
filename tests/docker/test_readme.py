"""README.md's CPU block, exactly as written, on a fresh checkout (own compose project).

Only the host ports and the project name come from the environment (compose lets them win over
.env), because this machine already runs a Postgres on 5432 and another stack on the defaults.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.docker.support import Checkout, docs_block, free_host_ports, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_cpu_block_starts_the_quick_sweep_on_a_healthy_cpu_worker(fresh_checkout: Checkout) -> None:
    box = fresh_checkout
    ports = free_host_ports()
    box.env.update(COMPOSE_PROJECT_NAME=box.project, **ports)
    pg_port = ports["POSTGRES_HOST_PORT"]
    box.run(docs_block(README, "docker compose --profile cpu up -d"), timeout=1200)
    worker = box.container("worker-cpu")
    wait_for("the README's worker-cpu to become healthy", lambda: box.health(worker) == "healthy", timeout=300, every=2)
    env = box.dotenv()
    assert env["POSTGRES_PASSWORD"].startswith("change-me")  # the block ran with the example's .env
    url = f"postgresql+psycopg2://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:{pg_port}/{env['POSTGRES_DB']}"

    def started() -> bool:
        trials = optuna.load_study(study_name=env["SWEEP_STUDY"], storage=url).get_trials(deepcopy=False)
        return any(t.intermediate_values or t.state.is_finished() for t in trials)

    wait_for("the quick preset's first epoch in Postgres (published port)", started, timeout=300, every=3)
