from __future__ import annotations

from alembic import context

from swarmstation.store.models import Base

engine = context.config.attributes.get("engine")
if engine is None:  # `alembic` on the command line: take the URL from the settings
    from swarmstation.config import load_settings
    from swarmstation.store.db import make_engine

    engine = make_engine(load_settings().sqlalchemy_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
