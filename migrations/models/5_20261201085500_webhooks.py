"""Webhooks (contract §9) and the deliveries waiting for a retry, for SQLite (default) and
PostgreSQL. A delivery row exists only once its first try failed; the index on
`next_attempt_at` serves the resume after a restart."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


def _tables(primary_key: str, big_primary_key: str, timestamp: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS "webhooks" (
    "id" {primary_key},
    "url" VARCHAR(2048) NOT NULL,
    "events" TEXT NOT NULL,
    "secret" VARCHAR(64) NOT NULL,
    "created_at" {timestamp} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "webhooks_user" ON "webhooks" ("user_id");
        CREATE TABLE IF NOT EXISTS "webhook_deliveries" (
    "id" {big_primary_key},
    "delivery_id" VARCHAR(32) NOT NULL UNIQUE,
    "body" TEXT NOT NULL,
    "attempts" INT NOT NULL DEFAULT 0,
    "created_at" {timestamp} NOT NULL,
    "next_attempt_at" {timestamp} NOT NULL,
    "webhook_id" INT NOT NULL REFERENCES "webhooks" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_webhook_de_next_at_5c1d2e" ON "webhook_deliveries" ("next_attempt_at");"""


async def upgrade(db: BaseDBAsyncClient) -> str:
    if db.schema_generator.DIALECT == "postgres":
        return _tables(
            "SERIAL NOT NULL PRIMARY KEY", "BIGSERIAL NOT NULL PRIMARY KEY", "TIMESTAMPTZ"
        )
    return _tables(
        "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        "TIMESTAMP",
    )


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "webhook_deliveries";
        DROP TABLE IF EXISTS "webhooks";"""


MODELS_STATE = (
    "eJztXW1z2rgW/isavjS5w2YIed3sJ5LQLbdJ6CbktrOhYxRbgCdGopYIYXb73++RbON3MAQI"
    "cf2lKZKOJD9Hks9zdCT/Uxowg1h874INBpgat0RntlE6Q/+UKB4Q+E9ygTIq4eHQz5YJAj9a"
    "SkJ3iqpE/MiFjXUB6V1scQJJBuG6bQ6Fyags3aQEuRKoa7MBwki3TEIFYjYSfYJu63ctVPvS"
    "KCNZZNzHAj0SHXqHWBeZYk82YzAd2jFpbyU1tmmbdvqMC80gz6ZONNPoIJMjylCX2cTsUfRE"
    "JmdQryz0gXutccRGwjKfCVSCdjD6MSIjYiAG/QFpaFnW28WmRYzOrtM4F3iCnk1uAnZIMNU9"
    "rOtsRAUU4MhitCf/9k0umD2R9TyRodhDtekjmlRKtalqDXLJULUFjy6fCOoc26YgaKejEjq7"
    "ql1TcGQQbFgmlVnkZWjahGtYdHb/UNJDbAsTW1C7QV6g294jas5DddCO0y4amD0bS2Xuoq4p"
    "MZii4nRobIo+wAIdGel90JASgrYcxY2oCcU0wXoE0m1Q38N3SFatEu79HD5pXZNY4YFpqmGo"
    "0jUxGaq0c7PXoOKjKiuHxaOmM2s0oH754QS6Q6cCJhUytUcogacgsgVhj+QwpSPLcke0N3Kd"
    "zvpFnF4GZAzSxSNLDnYp7XTATytp2k2zpd3VW5pWik0ETyIwkt0knVE5iaCrXAHQk1347fdq"
    "9eDgpFo5OD49Ojw5OTqtnEJZ1d941slPpzM+Wk5VCrPGn42bluwQg5nqTGGZ8FPJYIEdKaUM"
    "H32b/NCSNHDRx3Yy/r5ERAfwcFEdeIjPUoKX8EZaGOAXzSK0J/rwc796OgPh/9VuLz7Vbneg"
    "1G4Y5xs3q+rkSch9iMMrUBzq1JEeF5w/6pdD3F/TNzfwq/uHJ4enB8eH0/E+TZk1zL0h7ePL"
    "CTyHvRTCSaJLYewO2bxCrA8SUG2RlxRY3eLrWh82CuUMnFr1b2q9HXD+wwouAzvXtW9qhRhM"
    "3Jyr5s2fXvHAsnFx1TyPjmYB2CSvx3U6GijAG9BDTHUSH8+e8DZDX/rrvn5fvzxz7ao2vavf"
    "tM4QzEXRprWbu6/1W5mLKR8TW+bXv31pqCTHvIGUj7XGlUxwjLCo5Zhlpc+yzqev8rE1Xtlk"
    "i0yRqcBSmtqy5WbTc8QZGovA7UsUeC+Ot08r4phfAmrCHJBk3MOSEewNV3TP+0++NNG4Bn5a"
    "u/4SUsdlrVWXOdWQKrzUnePIkjOtBH1ttD4h+RP93bypKzTBPOzZqkW/XOvvkuwTHgmmUTbW"
    "sBHExEv2ksIveZtI3JfQclhyBVp+T0bAe1PzaGgsqeawZKHm7VYzB2KzEBkKSBQ80yVB0mvV"
    "fUr0nEi44uh+dByLn8kkZqlHQHUdsvduNe8M3J/e6PFS/XezjcdTN19wUMGzwxMT4fCZ2t1F"
    "7bJeUgg/Yv1pjG1DC0Etc1iVRVKmZeNZg+ogmoIp7ilw5FPIPruoXyrGX0pwkLs55Vmeccdf"
    "kM0xno7ofJ/pQxA++Pf7Qk7UX8WD+kovR7pvlCZyunTPKH0Npdu2CR6my8eHGfjy8WEqYZZZ"
    "YU7h+twUSIkYz/d2RKrYZthLn5p3rTO1o9KmF1cN5fFwdrOW8V4cZ9FGujLSdMGeCF1kwEfl"
    "8sCtN7AhYGEuNE6SsJ5tgIcECzK9zea3SR/ZC+jqx4Kbm0GxzVnhlfW+oTeyx1k4MrIoBB7Q"
    "aFJr4s7+dzLl3IWqILwF4c0x4Y2EDAyxKXvEE94grvjHz7fEUkE76XB/cWrJEeLhtV7Z0AVW"
    "WbByQYJSBlkNUhfwK09ordPldE04h5wr1isluJ0CueVZrqeBU06zWG+BwEwbFDohBnKl91Bn"
    "iCcWw0YHKCl0XgXz/feueYMEeRGIvECN1kQGLJoCjeFPl9kSAWIkh2muuP4snjEZERoO3JEO"
    "sjJ6KIGNEEsvog+3MvpwwHszPEDJGgjKbLPLZ1mPQxbfzn66c2c/5t1xp2Ic4/RwiYBILiDe"
    "dMBEwUCXUsUWMc5MTp6F3TuvcexsmbPubVw78bd+Rq4fF8yRElYW5xs1nTKCGxUroJ3rTAmM"
    "xxX4VPxN6/cFclanSnz2hnwr0A10c391VUoezAXAcwGOzuAUeN8mWMNzyyTQ5oDHJp0zB51D"
    "q43XeEg4o+N6pPy07zHuGitSLsI71vVySyefhZGeDn1+t4mS5l7GiZUkWmwcJZiRxYnHjdqS"
    "AdQ2aepsG8pZbZ34IEveqEtdNQqQ54OctFZuUwBwcAMr3a709rfm2pb+ntrmAoJlk86Oh+52"
    "M3DaqrAlN2tLuhrIuonhlc+Fd33docJbdPxw26B/J4Z51hNLSZuxjFkE09QIrqQF6hFk1qXM"
    "acpmtXnebF6FFHneiO5D3V+f12939pUGoZApUnzoBe9NX8nyy3sLTrZezluEnxbhp1vAu+aG"
    "n6asCQWnXZ3j4G0YrRrYCVTWG/DpHFaOmfVz14KQbpKQSp0uen41KLMaYvq2EIdo6UE1Ay09"
    "qKbSUpkVjavjfMxg2vYx7y+Cc0wwh16AtRycVAdNtWdYrdzg9MzxKRG53JysW90NfwUp/EVI"
    "YczEznIgKXDjxfKHRnJnIBana5ZGa0we+4w9vRKor04teQJpnRTBgyuBJQSQTCcKQaXNP3hU"
    "o94V6B84solOTHgDO1ezc3UTBv+AyLO8z11dhsnRDqCh6kTtUaWCT37f3UMdVYKre9uxc4TI"
    "Mnns0oy1NtamUI8jLFHjZdR5aJf+0y5978iDSwhb1h+owwm8CUUHcSDNzoGnR2aYsjRn8piT"
    "e+W7PPTUg87RddybXtCm19Im21qIMTnFc2i/VyuHWQx4WSzVgncyI3t5aobFMU4/i+RL5ALm"
    "TR9FcpalRQa1L5ELwNe9O10wp3To88Wciu2eYrtny7YkVnLbCIhJa9l8LW11OcSlU90kR7Bv"
    "gpVNYUtnZ0Fk57I0LazWDHwNuRITNAbGRFDXtLmA558g5zsLZ0CsAD9iICxQh4LFBq8uQQZD"
    "+bdTll+DGg1kblcA98JxjrbiBtpUfn8K26KMnJEvv9GlE68V+dN2uBYaDYHdAR+bdNxPeDl3"
    "ULh3Usgvh0GyZG6Zb6AobpTYyhslvBG24EetImLF7tfc3S85mRahcV75XHCKTZM4dxVMeD+n"
    "LitBkWK7q9ju+iVDiiMmxKK6ThDfjMI3+aLIk74903chYh4WKrj5fG4+9jeLXknP87eBV44w"
    "9PDo2qaAwRpwQ71fSqCbbk55FsvEfpkiavA9zevyDPaUGlqVzpzSo6rep2kf2QY7OsqyC3Z0"
    "lL4JJvMi1jxMqgUQdovnEN39SiVLkGClkh4kKPMipj2jwv2sRhhh6etJO405FYnad6Yu0L/T"
    "kIN3hvYMcCUYs2lqlJFGzDVZwXmSmbDJl9nP/wN7dXHB"
)
