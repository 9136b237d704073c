"""Writes data/samples/internal_notes.jsonl: Sao Việt's internal notes, written in the team's shorthand
(KH, KTV, HĐ, TT, t2, 14h, 12/3, 2tr …), rewritten in full for the customer record.

This is the sample domain whose answers follow one fixed style (every abbreviation has one expansion,
the rest of the note is kept word for word), so that a held-out note can be learned from the others:
the default model passes the evaluation gate on it after a short CPU run (README, Deploy). The notes
are composed from the pools below with a fixed seed, so the file is reproducible:

    .venv/bin/python scripts/make_internal_notes.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "samples" / "internal_notes.jsonl"
N_PAIRS = 220
SEED = 2026

INSTRUCTIONS = [
    "Viết lại ghi chú nội bộ sau thành câu đầy đủ, không viết tắt.",
    "Chuẩn hóa ghi chú của nhân viên để lưu vào hồ sơ khách hàng.",
]

# (shorthand, full) pairs; a note and its rewrite draw the same choice
CUSTOMERS = [("KH", "khách hàng"), ("KH doanh nghiệp", "khách hàng doanh nghiệp"), ("KH VIP", "khách hàng VIP")]
NAMES = ["anh Minh", "chị Lan", "cô Hạnh", "chú Tâm", "anh Quân", "chị Thảo", "anh Dũng", "chị Ngọc", "anh Phúc",
         "chị Vy", "bà Mai", "anh Khoa", "chị Hương", "ông Bình", "anh Sơn", "chị Trang"]
AREAS = ["Cầu Giấy", "Thủ Đức", "Hải Châu", "Ninh Kiều", "Lê Chân", "Biên Hòa", "Đống Đa", "Gò Vấp", "Thanh Khê",
         "Hà Đông", "Bình Thạnh", "Long Biên"]
DAYS = [("t2", "thứ Hai"), ("t3", "thứ Ba"), ("t4", "thứ Tư"), ("t5", "thứ Năm"), ("t6", "thứ Sáu"),
        ("t7", "thứ Bảy"), ("CN", "Chủ nhật")]
DEVICES = [("modem", "modem"), ("đầu thu", "đầu thu"), ("TB", "thiết bị"), ("router wifi", "router wifi"),
           ("camera", "camera"), ("bộ kích sóng", "bộ kích sóng")]
ISSUES = [("mạng chập chờn", "mạng chập chờn"), ("mất tín hiệu truyền hình", "mất tín hiệu truyền hình"),
          ("wifi yếu ở tầng 2", "wifi yếu ở tầng 2"), ("ko vào đc mạng", "không vào được mạng"),
          ("đèn LOS trên modem nhấp nháy đỏ", "đèn LOS trên modem nhấp nháy đỏ"),
          ("camera ko lên hình", "camera không lên hình"), ("mạng chậm vào buổi tối", "mạng chậm vào buổi tối")]
COMPANIES = ["Minh Phát", "Hòa Bình", "Tân Tiến", "Nam Việt", "Phú Gia", "An Khang", "Đại Dương", "Sông Hồng"]
SERVICES = [("DV truyền hình", "dịch vụ truyền hình"), ("DV internet", "dịch vụ internet"),
            ("DV camera", "dịch vụ camera"), ("gói cước gia đình", "gói cước gia đình")]

TEMPLATES = [
    ("{kh} {name} ở {area} báo {issue} từ {day}, KTV hẹn {time} {day2} qua kiểm tra.",
     "{KH} {name} ở {area} báo {issue} từ {day}, kỹ thuật viên hẹn {time} {day2} qua kiểm tra."),
    ("{kh} {name} đã TT {amount} qua ví điện tử nhưng hệ thống ko ghi nhận, NV CSKH đang đối soát.",
     "{KH} {name} đã thanh toán {amount} qua ví điện tử nhưng hệ thống không ghi nhận, nhân viên chăm sóc "
     "khách hàng đang đối soát."),
    ("HĐ của {kh} {name} hết hạn {date}, cần gọi lại trc {time} {day} để gia hạn.",
     "Hợp đồng của {kh} {name} hết hạn {date}, cần gọi lại trước {time} {day} để gia hạn."),
    ("{device} của {kh} {name} còn BH đến {date}, ko thu phí sửa chữa.",
     "{Device} của {kh} {name} còn bảo hành đến {date}, không thu phí sửa chữa."),
    ("{kh} {name} xin đổi ĐC lắp đặt sang {area}, đã gửi SĐT mới cho NV kinh doanh.",
     "{KH} {name} xin đổi địa chỉ lắp đặt sang {area}, đã gửi số điện thoại mới cho nhân viên kinh doanh."),
    ("KTV đã thay {device} cho {kh} {name} lúc {time} {day}, mạng đã ổn định.",
     "Kỹ thuật viên đã thay {device} cho {kh} {name} lúc {time} {day}, mạng đã ổn định."),
    ("{kh} {name} phàn nàn về thái độ NV lắp đặt, CSKH đã gọi xin lỗi lúc {time} {day}.",
     "{KH} {name} phàn nàn về thái độ nhân viên lắp đặt, bộ phận chăm sóc khách hàng đã gọi xin lỗi lúc {time} {day}."),
    ("{kh} {name} muốn hủy {service} từ {date}, đã hướng dẫn gửi yêu cầu qua ứng dụng.",
     "{KH} {name} muốn hủy {service} từ {date}, đã hướng dẫn gửi yêu cầu qua ứng dụng."),
    ("Đã hoàn {amount} cho {kh} {name} do bị trừ cước 2 lần, KH xác nhận đã nhận đc tiền {day}.",
     "Đã hoàn {amount} cho {kh} {name} do bị trừ cước 2 lần, khách hàng xác nhận đã nhận được tiền {day}."),
    ("{kh} {name} ko nghe máy qua SĐT đăng ký, KTV để lại lịch hẹn {time} {date}.",
     "{KH} {name} không nghe máy qua số điện thoại đăng ký, kỹ thuật viên để lại lịch hẹn {time} {date}."),
    ("Cty {company} ký HĐ internet cáp quang {months} tháng, TT trc {amount}, lắp đặt {date}.",
     "Công ty {company} ký hợp đồng internet cáp quang {months} tháng, thanh toán trước {amount}, lắp đặt {date}."),
    ("{kh} {name} hỏi {service}, NV đã gửi báo giá qua Zalo vs email lúc {time} {day}.",
     "{KH} {name} hỏi {service}, nhân viên đã gửi báo giá qua Zalo và email lúc {time} {day}."),
]


def _time(rng: random.Random) -> tuple[str, str]:
    hour, minute = rng.randint(8, 20), rng.choice([0, 0, 15, 30, 45])
    if minute:
        return f"{hour}h{minute}", f"{hour} giờ {minute}"
    return f"{hour}h", f"{hour} giờ"


def _date(rng: random.Random) -> tuple[str, str]:
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    return f"{day}/{month}", f"ngày {day} tháng {month}"


def _amount(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1, 24)
    return f"{n}tr", f"{n} triệu đồng"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def pair(rng: random.Random) -> dict:
    note, full = rng.choice(TEMPLATES)
    kh = rng.choice(CUSTOMERS)
    device = rng.choice(DEVICES)
    day, day2 = rng.sample(DAYS, 2)
    slots = {"name": rng.choice(NAMES), "area": rng.choice(AREAS), "issue": rng.choice(ISSUES),
             "day": day, "day2": day2, "time": _time(rng), "date": _date(rng), "amount": _amount(rng),
             "service": rng.choice(SERVICES), "company": rng.choice(COMPANIES),
             "months": str(rng.choice([6, 12, 24]))}
    short = {k: (v[0] if isinstance(v, tuple) else v) for k, v in slots.items()}
    long = {k: (v[1] if isinstance(v, tuple) else v) for k, v in slots.items()}
    short.update(kh=kh[0], device=device[0])
    long.update(kh=kh[1], KH=_cap(kh[1]), device=device[1], Device=_cap(device[1]))
    return {"instruction": rng.choice(INSTRUCTIONS), "input": note.format(**short), "output": full.format(**long)}


def main() -> None:
    rng = random.Random(SEED)
    seen, rows = set(), []
    while len(rows) < N_PAIRS:
        row = pair(rng)
        if row["input"] not in seen:
            seen.add(row["input"])
            rows.append(row)
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pairs → {OUT}")


if __name__ == "__main__":
    main()
