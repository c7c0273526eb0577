"""The initial schema.

aerich writes migrations as SQL for one dialect; this one carries both the SQLite (default) and
the PostgreSQL (`DATABASE_URL`) statements and picks by the connection it runs on.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    if db.schema_generator.DIALECT == "postgres":
        return POSTGRES
    return SQLITE


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "message_logs";
        DROP TABLE IF EXISTS "pairing_codes";
        DROP TABLE IF EXISTS "pairings";
        DROP TABLE IF EXISTS "devices";
        DROP TABLE IF EXISTS "users";"""


SQLITE = """
CREATE TABLE IF NOT EXISTS "users" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "username" VARCHAR(32) NOT NULL UNIQUE,
    "password_hash" VARCHAR(128) NOT NULL,
    "created_at" TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS "devices" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL,
    "device_type" VARCHAR(6) NOT NULL /* HOST: host\nCLIENT: client */,
    "device_token" VARCHAR(128),
    "last_seen" TIMESTAMP,
    "created_at" TIMESTAMP NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_devices_user_id_2d0edd" ON "devices" ("user_id", "id");
CREATE TABLE IF NOT EXISTS "message_logs" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "msg_type" VARCHAR(16) NOT NULL,
    "payload" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "from_device_id" INT REFERENCES "devices" ("id") ON DELETE SET NULL,
    "to_device_id" INT REFERENCES "devices" ("id") ON DELETE SET NULL
) /* One relayed message. `payload` holds the JSON text exactly as it was forwarded. */;
CREATE INDEX IF NOT EXISTS "idx_message_log_from_de_6d0e2f" ON "message_logs" ("from_device_id", "id");
CREATE INDEX IF NOT EXISTS "idx_message_log_to_devi_f640e1" ON "message_logs" ("to_device_id", "id");
CREATE TABLE IF NOT EXISTS "pairings" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "client_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    "host_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_pairings_host_de_90a673" UNIQUE ("host_device_id", "client_device_id")
);
CREATE INDEX IF NOT EXISTS "idx_pairings_client__d75e5b" ON "pairings" ("client_device_id", "id");
CREATE TABLE IF NOT EXISTS "pairing_codes" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "code" VARCHAR(6) NOT NULL,
    "expires_at" TIMESTAMP NOT NULL,
    "used" INT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "host_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_pairing_cod_user_id_426c7b" ON "pairing_codes" ("user_id", "code");
CREATE INDEX IF NOT EXISTS "idx_pairing_cod_code_d18737" ON "pairing_codes" ("code", "expires_at");
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSON NOT NULL
);
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS "users" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "username" VARCHAR(32) NOT NULL UNIQUE,
    "password_hash" VARCHAR(128) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS "devices" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL,
    "device_type" VARCHAR(6) NOT NULL,
    "device_token" VARCHAR(128),
    "last_seen" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_devices_user_id_2d0edd" ON "devices" ("user_id", "id");
COMMENT ON COLUMN "devices"."device_type" IS 'HOST: host\nCLIENT: client';
CREATE TABLE IF NOT EXISTS "message_logs" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "msg_type" VARCHAR(16) NOT NULL,
    "payload" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "from_device_id" INT REFERENCES "devices" ("id") ON DELETE SET NULL,
    "to_device_id" INT REFERENCES "devices" ("id") ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "idx_message_log_from_de_6d0e2f" ON "message_logs" ("from_device_id", "id");
CREATE INDEX IF NOT EXISTS "idx_message_log_to_devi_f640e1" ON "message_logs" ("to_device_id", "id");
COMMENT ON TABLE "message_logs" IS 'One relayed message. `payload` holds the JSON text exactly as it was forwarded.';
CREATE TABLE IF NOT EXISTS "pairings" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL,
    "client_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    "host_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_pairings_host_de_90a673" UNIQUE ("host_device_id", "client_device_id")
);
CREATE INDEX IF NOT EXISTS "idx_pairings_client__d75e5b" ON "pairings" ("client_device_id", "id");
CREATE TABLE IF NOT EXISTS "pairing_codes" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "code" VARCHAR(6) NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "used" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "host_device_id" INT NOT NULL REFERENCES "devices" ("id") ON DELETE CASCADE,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_pairing_cod_user_id_426c7b" ON "pairing_codes" ("user_id", "code");
CREATE INDEX IF NOT EXISTS "idx_pairing_cod_code_d18737" ON "pairing_codes" ("code", "expires_at");
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);
"""

MODELS_STATE = (
    "eJztXG1z2jgQ/isef0pnchkw5OX6DQhpuBLoJM610zTjClsYT2yJ2qIJ08t/P0m28TuIDF"
    "Bw/SWJV7uy9KzWfnZl5ZfsYAPa3skl/GnpUH4v/ZIRcNgfqZZjSQbTaSRnAgJGNlc1uA6X"
    "gZFHXKATKh4D24PHrNXTXWtKLIyoFM1smwmxThUtZEaiGbJ+zKBGsAnJBLq04eGRii1kwB"
    "faOb18kGcedDXLYHeiPx9Z+/RJG1vQNhKD91W4XCPzKZf1ELniiuz2I03H9sxBkfJ0TiYY"
    "LbQtRJjUhAi6gEDWPXFnbD5suMHMwyn6Q49U/DHHbAw4BjObxOY/0iKZrGmDoarddVVNk9"
    "dATMeIoU2H6vHZm2wIfyn15nnzonHWvKAqfJgLyfmrf+sIGN+QwzNQ5VfeDgjwNTjoEaj8"
    "dwbWzgS4+biG+ilk6ZDTyIY4LoM2FETYRgtsF+A64EWzITLJhF6eNZcg+W/rtnPduj06a7"
    "5jN8Q0Hvw4GQQtCm9iYEfg+jHkg5SLcRfNHI5zj44LID8mE3inuthn2OXr4Z36Xppgj3xD"
    "nX6vO6BXum1BP+rWdoeIN4qdUeQL/ATROgs+bfcmDwRPjP1c93XlQgBqqlUINm9Lwm0Dj2"
    "gezMP6kuJELAfm450wTIFtBJYn4R+HB/0SpNXeTfdObd18Yt07nvfD5mi11C5rUbh0npJm"
    "ImDRifS5p15L7FL6Ohx0OZo0Mk2X3zHSU7/KbExgRrCG8LMGjDgmoTgUJXysu5DhrgGyrp"
    "OTlhvw8t69WegEjSGy58EKPBC3B8Gy1OsxuibIxWIWqwnZITh3A5yMsdzxUy4lY3Bl0b3C"
    "LrRM9BHOM4QhBWpA8u+Dbg4M3Ndw9YTSaFm64HmRFsQXFZ07nTEk/pu8dddpXXZljvAI6E"
    "/PwDW0AqgZV9GmwGIj8rKYtwPzq4+30AZ8JoVwf/J7KRHiyWc953EVViJYBSBRLQNuBqkO"
    "vSoTWiw2sYJjMZmI1myTozhpCUDA5FNi92Z3CiC7gZ5HW/rYlHNKH7HW42XlD8fX02xsit"
    "VA5CGCkksdOoeGFFifSN+nYG5jYHynaREdvEQmUPrnbjiQCHwhEnyhPdpzCXiSRaRn+muM"
    "XYYANE7SKdM2+hepzoxd7GhBEhQVaY6lB5lyhIx8reJN2zL/lPrN34rSaJwrtcbZxWnz/P"
    "z0orYgDdmmZeyh3fvACESC/K2u8jieuaQKke+BuM0+lx3emvWK1BfqxQWGeqbCEIRiFmOV"
    "xmI+xjGTUkC8LM3pflETGU4I5dFN68u7RJbTHw4+hOox6Dv9YTsFeZWBvskVe5RxChUasu"
    "8gwcwza/imBHTPakib2ROI4E2/yAXBTZtV0K5M7WPrcQMZfrSNd1ggi6b42ehNZPp0GNLg"
    "vt+X8xdzBfBKgNMRXABvcSVlm3lcWCTISeJi9YPiDC5eqtjsDvaDXzdKQBfURyLZYyaTyq"
    "gcVxve23q5FadCFWUshr68mxZ5sScYWHmm1TZGDo3MPhQFEc4aVviu5pIx1HZJdfYNZVGu"
    "k11k+dtGhU+NCuTVIOc9K9fdndsBp+TbKcW8MtxtWcktox2e3X0iyW7p19/1YJjwZWrRNy"
    "XjJRWX3C2XDDwgWlIP9UtR693q13qxNb0mS09alpClHwgrFyrs0uda3r4gxjYEqPBjoryn"
    "04jabMuZC8luvdkeDvsJR7Z76S2R+5t29/aozj1IlSyS2A+skt4/O+mtErLtJrzVl5DVl5"
    "B7kHSt/BKy4JlQJbSbqxr8nnSWL+ycPDZc8MUJLFsz209cq2x0l9ko8+m6x/niNpvJSn8v"
    "xImctKEIJKUNpTArZU3pT7w87xnTsJ0Ab7IOzhnDEpYAtnKOrMpcitEvV+aS4YEiBzhip9"
    "Tf/pF96VhMdRphb04jtKBr6ZM8kha0LKVpINKpeFpZeNpPSr2DMBOlDzGTEhIH5fRUgDhQ"
    "rULiwNuSxIEF1RoIB+olRLdeq4nQslqtmJaxthQtw4gE/9chiTA7fFS0+bUwSZMxSyfSf5"
    "JteYdYA1sCLgMjwbgyZx7SxxtSVIp10M6rke2y3vD6P4TvRic="
)
