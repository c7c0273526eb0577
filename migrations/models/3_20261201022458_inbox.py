"""Inboxes (contract §6): a seq per kept frame, and each device's reserved seqs (SQL valid on
SQLite and PostgreSQL alike)."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "devices" ADD "inbox_seq" BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE "message_logs" ADD "seq" BIGINT;
        CREATE INDEX "idx_message_log_to_devi_22eba7" ON "message_logs" ("to_device_id", "seq");"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "idx_message_log_to_devi_22eba7";
        ALTER TABLE "devices" DROP COLUMN "inbox_seq";
        ALTER TABLE "message_logs" DROP COLUMN "seq";"""


MODELS_STATE = (
    "eJztXG1z2jgQ/isef0pnchkw5KX9BoQ0XAl0EnLXaS7jClsYT2yJ2KKB6eW/nyTb+FVgUi"
    "Dg85ckXu3K8iOt9OxKyi/Zxjq03JNL+NPUoPxJ+iUjYLM/EiXHkgwmk1DOBAQMLa6qcx0u"
    "A0OXOEAjVDwClguPWamrOeaEmBhRKZpaFhNijSqayAhFU2Q+T6FKsAHJGDq04OGRik2kwx"
    "mtnD4+yFMXOqqpszfRn4+sfPKkjkxo6bHGeypcrpL5hMs6iFxxRfb6oapha2qjUHkyJ2OM"
    "FtomIkxqQAQdQCCrnjhT9j2suf6XB5/oNT1U8docsdHhCEwtEvn+oRrKZFXt9QfqXXugqv"
    "IaiGkYMbRpU13+9QZrwh9KtX5ev6id1S+oCm/mQnL+6r06BMYz5PD0BvIrLwcEeBoc9BBU"
    "/jsFa2sMnGxcA/0EsrTJSWQDHJdBGwhCbMMBtgtwbTBTLYgMMqaPZ/UlSP7VuG1dN26Pzu"
    "of2Asx9QfPT3p+icKLGNghuJ4PeSBlYtxGU5vj3KHtAsjzyRjeiSr2GXb5un83+CSNsUv+"
    "Qa1up92jT5plQs/r1u6OPL0h7gxRX+AniNYZ8Em7N/WAP2Ps57ivKhc5oKZaQrB5WRxuC7"
    "hEdWEW1pcUJ2LaMBvvmGECbN23PAn+ODzolyA96Ny07waNm6+sett1ny2OVmPQZiUKl84T"
    "0pQHLCqR/u4MriX2KH3v99ocTeqZhsPfGOoNvsusTWBKsIrwiwr0KCaBOBDF+thEQzyjff"
    "Wc7uOmaYiX5qjZ6hV6UxNaZbsr9EdFqdXOlUrt7OK0fn5+elFZLNXpomVrdrPzmS3bsV4N"
    "1vEQe82BDB8VkHUdLG65AQ/bu1WdfqDeR9bc9/4DcTl/olrqcRGqnJMHRyx252p7zodZhD"
    "F6yqTDDK40ulfYgaaBvsB5iqwlQPUDrHu/mgMD9zUYPYE0HJYOeFmEZNFBRb+dfjEkHotq"
    "3LUal22ZIzwE2tMLcHRVADXjieoEmKxFbsYK4ptffbmFFuBfIoT7q1dLgRCPz/WcQ5dY5c"
    "HKB4lq6XAzSLXoU5HQYr6JFRzxyZi3potsxU5KAAIG/yT2bvYmH7Ib6Lq0pIsNOSPtFCk9"
    "XpZ6sj091cJGvvyT3EdQcmiHzqEu+dYn0o8JmFsY6D9oSEobL5ExlP686/ckAmdEgjNaoz"
    "WXgCuZRHqhv0bYYQhA/SQZrm6j/jyZsZGDbdUPQMME2bH0IFOOkEvOWPZ6GbWlzL1YSbWd"
    "UHZx6s12jSWpoeweiNrscy7oramIPEmfqjjrU02lfXwfTWM8oE6ajXHEpBAQL4t/2t8Gsd"
    "AngPLopvHtQyz86fZ7nwP1CPStbr9Zhqb/x+zP2nmf38n47FkW731yPmk6kDMJkDYsUCf8"
    "5tZYCG+SO+UEN2lWQrsyyxIZjxtItoS72YcFct5sS9p7Y0kX2gypd9/tytmDuQR4JcBJDx"
    "bAK05qbTOkDvI1GfF0JJUjDqajWaPNHuR48FJ4Mej8VFUoe0wFtSmV4/Lcx7YWN3HwWZJ0"
    "MfTF3T/K8r2cjpVlWu4oZdDI9KSYE+G0YYnvai4ZQW2XVGffUM7LddKDLHsHTzhrlCCvBj"
    "lrrlx3o3QHnJLvbIl5ZbDxtZJbhpttuzspzF7pbXlofjPhbGLSlZLxkpJL7pZL+j2QdxMj"
    "0C9Edn3bZ4gjw3pNoh63LCBRPxBiniubTqe2rM1YjC0IkPBoV9YENaQ22+rMhWS3vdns97"
    "uxjmx2kvtQ9zfN9u1RlfcgVTKJIIdexr3imay4cW8Zk2035i3PpZbnUvcg7lp5LlUwJ5Qx"
    "7eYSB+8T0fKBnRHKBgNeHMOyMbP92LUMSHcZkLI+Xfdia9RmM4Hp+0IcC0trSo6wtKYIw1"
    "JWlDxX57ovmLrtGLjjdXBOGRYwC7CVG5X8Bqr6k85W/qn13OdTEnaFuXK3MfpaBoViqIsV"
    "FKYodp6bSpF/hfH22ySFI4jltZu9uXbTgI6pjeUM/uuXLGXAINQpKXBRKLCQJ4iZmZgiFI"
    "GTKaenOTgZ1RJyMl4WJw7MqdZA2FcvILrVSiUP461UxIyXlSVoGUbE/+cxcYTZLTvR1uLC"
    "JEnGTI1I/0qW6R5ienEJuAyMGONK3eFJXtdJUClWQTMr/bjLVM7rf8C2oZo="
)
