"""Pairing codes are stored as HMAC-SHA256 digests (64 hex characters), not as the code.

SQLite does not enforce VARCHAR lengths, so only PostgreSQL needs the column widened.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    if db.schema_generator.DIALECT != "postgres":
        return ""
    return """
        ALTER TABLE "pairing_codes" ALTER COLUMN "code" TYPE VARCHAR(64) USING "code"::VARCHAR(64);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    if db.schema_generator.DIALECT != "postgres":
        return ""
    return """
        ALTER TABLE "pairing_codes" ALTER COLUMN "code" TYPE VARCHAR(6) USING "code"::VARCHAR(6);"""


MODELS_STATE = (
    "eJztXG1z2jgQ/isef0pnchkw5OX6DQhpuBLoJM5dp7mMK2xhPLElaosmTC///STZxq8Ckw"
    "EKjr8k8WpXlp6V5GdXUn7JDjag7Z1cwp+WDuWP0i8ZAYf9kSo5lmQwnUZyJiBgZHNVg+tw"
    "GRh5xAU6oeIxsD14zEo93bWmxMKIStHMtpkQ61TRQmYkmiHrxwxqBJuQTKBLCx4eqdhCBn"
    "yhldPHB3nmQVezDPYm+vORlU+ftLEFbSPReF+FyzUyn3JZD5ErrsheP9J0bM8cFClP52SC"
    "0ULbQoRJTYigCwhk1RN3xvrDmhv0POyi3/RIxW9zzMaAYzCzSaz/Iy2SyZo2GKraXVfVNH"
    "kNxHSMGNq0qR7vvcma8IdSb543LxpnzQuqwpu5kJy/+q+OgPENOTwDVX7l5YAAX4ODHoHK"
    "f2dg7UyAm49rqJ9CljY5jWyI4zJoQ0GEbTTAdgGuA140GyKTTOjjWXMJkn+3bjvXrdujs+"
    "YH9kJM54M/TwZBicKLGNgRuP4c8kHKxbiLZg7HuUfbBZA/JxN4p6rYZ9jl6+Gd+lGaYI/8"
    "izr9XndAn3Tbgv6sW9sdRbwhdobIF/gJonUGfNruTR4IVoz9HPd15aIA1FRLCDYvS8JtA4"
    "9oHszD+pLiRCwH5uOdMEyBbQSWJ+Efhwf9EqTV3k33Tm3dfGHVO573w+ZotdQuK1G4dJ6S"
    "ZmbAohLpn556LbFH6dtw0OVo0plpuvyNkZ76TWZtAjOCNYSfNWDEMQnFoSjhY92FDHcNkH"
    "WdnLTcgJf37stCO2gMkT0PRuCBuD2YLEu9HqNrBblYzGI1ITsE526AkzGWO37KpWQMriy6"
    "V9iFlok+w3mGMKRADUj+fVDNgYH7Go6eUBoNSxc8L8KC+KCifac9hsT/krfuOq3LrswRHg"
    "H96Rm4hiaAmnEVbQos1iIvi3k7ML/6fAttwHsihPuLX0uJEE+u9ZzHVVgVwSoAiWoZcDNI"
    "dehTmdBicxMrODYnE7M1W+QoTloCEDB5l9i72ZsCyG6g59GSPjblnNRHrPR4WfrD8fU0G5"
    "vFciDyEEHJpQ6dQ0MKrE+k71MwtzEwvtOwiDZeIhMo/XU3HEgEvhAJvtAa7bkEPMki0jP9"
    "NcYuQwAaJ+mQaRv1F8nOjF3saEEQFCVpjqUHmXKEjHyt5E3bMt9L/uZPRWk0zpVa4+zitH"
    "l+fnpRW5CGbNEy9tDufWIEIkH+Vmd5HM9ckoXI90DcZp/TDm+NeovkF+riBEM9k2EIpmIW"
    "Y5XOxXyMYyalgHhZmNP9qiYinBDKo5vW1w+JKKc/HHwK1WPQd/rDdgryKgJ9kyv2KOIslG"
    "jIfoMKRp5ZwzcFoHuWQ9rMnkAEb/pDXhDctFkF7crQPjYeNxDhR9t4hwVy0RA/O3sTkT5t"
    "hjS47/fl/MFcAbwS4PQMFsArzqRsM44LkwQ5QVwsfyCO4OKpis3uYD/4eaMEdEF+JJI9Zi"
    "KpjMpxteG9rY+bOBSqKKMY+vJuWuTNvYITK8+02sbIoZHZRbEgwlnDCt/VXDKG2i6pzr6h"
    "XJTrZAdZ/raRcNWoQF4Nct5aue7u3A44Jd9OEfPKcLdlJbeMdnh2d0SSvdLPv+tBM+HL1K"
    "JfSsZLKi65Wy4ZeKBoSj3UL0Wud9uHJ2PDek2inrQsIVE/EGJeKLdLl7a8rUGMbQiQ8DxR"
    "3gI1ojbbcuZCsltvtofDfsKR7V56V+T+pt29PapzD1IliyS2BKu4933HvVVMtt2YtzoMWR"
    "2G3IO4a+VhSMGaUMW0m0sc/J6Ilg/snFA2HPDiGJaNme3HrlVAusuAlPl03Rt9cZvNBKa/"
    "F+JEWNpQCoSlDUUYlrKi9Ckvz3vGdNpOgDdZB+eMYQmzAFu5Ssav3mk/6WoVHJUufD4lZb"
    "c7vlXb6/WjCgrfX1CYodhFrsfE/gfA268wlI4gVnc99uauRwu6lj6Rc/hvULKUAYNIp6LA"
    "ZaHAQp4gZmZiilAGTqacnhbgZFRLyMl4WZI4sEm1BsKBegnRrddqRRhvrSZmvKwsRcswIs"
    "F/zUgizK52ibYWFyZpMmbpRPpPsi3vENOLS8BlYCQYV+ZGSfrySIpKsQraeenHXaZyXv8H"
    "k0i0fg=="
)
