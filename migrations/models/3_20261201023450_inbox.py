"""Inboxes (contract §6): a seq per kept frame, and each device's reserved seqs (SQL valid on
SQLite and PostgreSQL alike). No index on the seq: see `simbridge.services.inbox`."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "devices" ADD "inbox_seq" BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE "message_logs" ADD "seq" BIGINT;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
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
    "WXgCuZRHqhv0bYYQhA/SQZrm6j/jyZsZGDbdUPQMME2bH0IFOOkJKvlThbStCLlTvbCTMX"
    "Z9hs11iSAcrugajNPqd83ppxyJPbqYqTO9VUdsd3xTTGA+qL2RhHTAoB8bIwp/1tEItwAi"
    "iPbhrfPsSinG6/9zlQj0Df6vabZQT6f0zyrJ3e+Z3Ezp4l694ntZNe9XPG+mnDAnXCb+6A"
    "hfAmqVNOcJNmJbQrkymR8biBnEq4aX1YIOdNqqS9N5Zboc2Qevfdrpw9mEuAVwKc9GABvO"
    "Lc1TYj5yAtkxE2RzI24pg5mhza7HmNBy9TF4POz0iFssdU7JpSOS6Pd2xrcRMHnyVJF0Nf"
    "3G2iLN/L6VhZpuXGUQaNTE+KORFOG5b4ruaSEdR2SXX2DeW8XCc9yLI36oSzRgnyapCz5s"
    "p190N3wCn5BpaYVwb7Wyu5ZbintrsDweyV3o6H5jcTziYmXSkZLym55G65pN8DeTcxAv1C"
    "ZNe3fVQ4MqzXJOpxywIS9QMh5rmy6XRqy9qMxdiCAAlPcGVNUENqs63OXEh225vNfr8b68"
    "hmJ7kPdX/TbN8eVXkPUiWTCHLoZdwrnsmKG/eWMdl2Y97y+Gl5/HQP4q6Vx08Fc0IZ024u"
    "cfA+ES0f2BmhbDDgxTEsGzPbj13LgHSXASnr03Xvr0ZtNhOYvi/EsbC0puQIS2uKMCxlRc"
    "lzda77gqnbjoE7XgfnlGEBswBbuTjJL5qqP+ls5R9Oz30+JWFXmJt1G6OvZVAohrpYQWGK"
    "Yue5kBT5jxdvvzRSOIJY3q7Zm9s1DeiY2ljO4L9+yVIGDEKdkgIXhQILeYKYmYkpQhE4mX"
    "J6moOTUS0hJ+NlceLAnGoNhH31AqJbrVTyMN5KRcx4WVmClmFE/P8RE0eYXaYTbS0uTJJk"
    "zNSI9K9kme4hpheXgMvAiDGu1B2e5HWdBJViFTSz0o+7TOW8/gf6Epmb"
)
