"""Command states and the queue of commands waiting for their host (contract §7), for SQLite
(default) and PostgreSQL. The partial index `commands_queued` holds only queued commands, so it
costs nothing on the relay path, where commands are `sent` or `answered`."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


def _table(primary_key: str, timestamp: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS "commands" (
    "id" {primary_key},
    "req_id" VARCHAR(128) NOT NULL,
    "host_device_id" INT NOT NULL,
    "sender_device_id" INT,
    "cmd" TEXT NOT NULL,
    "state" VARCHAR(8) NOT NULL,
    "frame" TEXT,
    "answer" TEXT,
    "expires_at" {timestamp},
    "created_at" {timestamp} NOT NULL,
    "updated_at" {timestamp} NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_commands_req_id_61d4d5" ON "commands" ("req_id");
CREATE INDEX IF NOT EXISTS "commands_queued" ON "commands" ("host_device_id", "id")
    WHERE "state" = 'queued';"""


async def upgrade(db: BaseDBAsyncClient) -> str:
    if db.schema_generator.DIALECT == "postgres":
        return _table("BIGSERIAL NOT NULL PRIMARY KEY", "TIMESTAMPTZ")
    return _table("INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", "TIMESTAMP")


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "commands";"""


MODELS_STATE = (
    "eJztXFtTIjkU/ispXlarXEvxuu4TKs6wi+Aq7kyNTjWxO0DK7gQ7QaRm/e+bpLvpOzYMYN"
    "vTL+NwkpPLd07COV8SflQsaiCTbZ9Ry4LEuEY6tY3KCfhRIdBC4j/JFbZABQ6HfrEUcPhg"
    "Kg3dqaqE8IFxG+pcyHvQZEiIDMR0Gw85pkTWbhMEXA3Qs6kFINBNjAgH1AZ8gMB1/aYDal"
    "eNLSCrjAeQgweki9EB2gOYb8tuDKqLfjDpL6XFe3JPugPKuGagZ6wjDRtdgBkgFPSojXCf"
    "gEc0ORHtykq/Ma83BuiIm/gZiUbABgRPIzRCBqBiPEJb9Czb7UFsIqO76XTOOJyAZ8ywwA"
    "5wqoYHdZ2OCBcVGDAp6cu/A8w4tSeynUc05NugNp0iJlLrnqjeRCkaqr7E1OWMRJtjG3ME"
    "NrpK0N1U/WLOgIGgYWIii9DLENuIaZB3N/9U2kNocwxN0bqBXsSwvSlqzqS6YMPpF1i4b0"
    "NpzE3QwxKDKSrOgMaYDwQsYiAjfSAspJREX47hRgSLahqnfSTktjDf3XchVr0i5n0cPmo9"
    "jMywY2Llhkqu8clQyU5xv0H4haor3eJB06k5sohffzgRwyFTBUy4lPYRQWIWSPbA7ZF0Uz"
    "IyTdejPc91ButXcUYZ0DFQD45M6exS2xmAL6toWqvd0W7qHU2rxBaCpxHwZFekUyIXkRgq"
    "UwD05RB+/6Na3ds7qu7sHR4f7B8dHRzvHIu6arzxoqNXZzA+Wk5TCrPGp0arIwdExUp1lr"
    "AUvCodyKGjpYzho2+jJy3JAmcDaCfj72tEbCAmF7WBh/gsI3iCd7KCBV80E5E+H4iPu9Xj"
    "GQj/W7s++1y73hC1NsM4t9yiqlMmIfchDu9AcahTPT2u+LbXL4a4v6evz/Gru/tH+8d7h/"
    "tTf59KZrm559I+vgyJedgLIZykuhDGrssWFWLdSkC1g15SYHWrr2p/WCuUM3Dq1L+q/dZi"
    "7MkMbgMbl7WvaoewJm5Js9365FUPbBtnzfZp1Ju5wCZ5P66TkaUAb4gRQqKjuD97ynmGvv"
    "LPbf22fn7ixlX35Kbe6pwAsRb5Pam1br7Ur2UpJGyMbFle/3rVUCInvBGSi1qjKQVOEBaN"
    "HLPs9Fn2+fRdPrbHq5hsniUyVVjIUjnbbta9RhzXmAduX6PEe368/bQijvm5QI1jCyXjHt"
    "aMYG+4qtvef4plicalyE9rl1chc5zXOnVZUg2ZwpNuHEa2nGkj4Euj8xnIj+Bbu1VXaIrw"
    "sG+rHv16nW8VOSY44lQjdKxBI4iJJ/ZE4S95G0ncF7ByWHMJVv5IQcBHM/NoaCxo5rBmae"
    "Z8m5mJxGauZCigUeaZbhIkWaveYyJzIuGKo3vhEIt/o0ksUo+A6hKyt24zHwzcV897PKn/"
    "3WzD8ZTmCzqVmLuYMeJOPlO7Oaud1ysK4QeoP46hbWghqGUJrdKIZFo3XmRVragEEthX4M"
    "hZyDG7qJ+rjL+SQJC7JVuzmHGHL8hGjKcj+jZneheET/z7fS4S9VdhUH+S5UjnRkliTpfO"
    "jJKfSenytsDD6fLhfoZ8+XA/NWGWReGcwuXcFEiJGL/NdkSayDPslc/tm86JOlG5J2fNhm"
    "I8nNOsRdiLwyzWSDdGmi3oIyLzOHxUrwi59RoOBEzIuMZQEtazA/CQYplM5zn8xuSBvghb"
    "Pc15uBlUW18UvrPab+i1nHGWREYWg4gJGm1iTtzV/0GWnLtRlQlvmfAWOOGNXBkYQixHxB"
    "K+QVz1i7+vkaku7aTDfeW0UiDEw3u9iqFLrLJg5YIkahloOUidiU9FQmuVlNMlYkyUNGm/"
    "kkA7BUq3ZlFPllNPM2l/jouZtjDoBBnA1d4G3SGcmBQaXZGSisGry3x/3bRbgKMXDtCLaN"
    "GcyAuLmIOx+NOjtkQAGcnXNJfcfhZmTN4IDV/ckQTZFririBghJi9vH+by9qHF+jMYoGQL"
    "BHXyTPksyjhk4XZ208md3Ri74y7FOMbp1yUCKoWAeN0XJsoMdCFT5CjjzETyzE3v/Ayxkz"
    "Oy7n2onfi3fsZcP65YICMs7Z5vNHTKCG5UrYT2TTIl4I9L4FT8Q+uPBXJWUiW+ekPcihgG"
    "aN02m5VkZy4BfhPg6ApOgfd9Lmt4tExC2hxgbNJz5iA5tNz7GncJb3RcRsqXfY/lrrEqW+"
    "X1jlV9uaUnn2WQng59cY+JktZexoWVpFoeHCWEkeWLx7XGkgHU1hnq5A3lrLFO3MmSD+pS"
    "d40S5LdBTtor83QBOHiAlR5Xeudbb8aW/pna+i4Eyy6dEw/dHWbgtVUZS643lnQtkPUQw6"
    "tfCHZ91VeFc/T8MG/Qf5DAPOuLpaTDWEpNBEnqDa6kDepB6KzKmFPJeq152m43Q4Y8bUTP"
    "oW4vT+vXG7vKgqIS5ikcepn3pu9kxc17y5xstTlvef20vH6ag7zrzeunKXtCmdMujzh4n4"
    "xWOXZCKus5fHoOK31m9blrmZCuMyGVNp33/WpQZzmJ6ftCHEpL96oZ0tK9ampaKoui9+oY"
    "G1OxbAeQDebBOaZYQBZgJQ8n1UNT7VnsVu7l9Mz3UyJ6hXlZt7xf+CuTwl8kKYyF2FkeJA"
    "V+8WLxRyOFCxDL1zW5eV1TQzbWB5WE+NctmRkBQ79OGQIXJQROjRPSI7P0EKEIMVn14CBD"
    "TCZqpcZkqizyW5xiUc2BsFu9gOju7uxkiXh3dtIjXlkWCcso4e5vxIQRlo/p0o4WpyrRYA"
    "zrHPwHTMw+Ir04A1wJRijiir3hiT7XiYRSsoHTJPpxnVTO6//c6gdP"
)
