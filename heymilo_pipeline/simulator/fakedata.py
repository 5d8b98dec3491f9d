"""Small built-in word lists and hashing helpers for realistic-looking fake data.

Everything here is a pure function of integers: Python's ``hash()`` of strings is salted per process,
so it must never feed generated data (same seed -> byte-identical output across runs).
"""

from __future__ import annotations

import hashlib

MASK64 = (1 << 64) - 1


def mix64(value: int) -> int:
    """SplitMix64 finalizer. It is a bijection on 64-bit integers, so distinct counters give distinct
    ids without keeping a set of the ids already handed out."""
    z = value & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def digest(*parts: object, size: int = 32) -> str:
    """Hex digest of the parts, used for URL signatures and file keys."""
    text = "|".join(str(p) for p in parts).encode()
    return hashlib.blake2b(text, digest_size=size).hexdigest()


def slugify(text: str) -> str:
    out = []
    for ch in text.lower():
        if ch.isalnum():
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-")


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard "
    "Susan Joseph Jessica Thomas Sarah Carlos Karen Daniel Lisa Matthew Nancy Anthony Betty Mark "
    "Sandra Donald Ashley Steven Kimberly Andrew Emily Paul Donna Joshua Michelle Kenji Carol Kevin "
    "Amanda Brian Melissa Wei Deborah Timothy Stephanie Ronald Rebecca Jason Sharon Priya Laura "
    "Jeffrey Cynthia Ryan Dorothy Jacob Amy Aisha Mateo Olga Nguyen Fatima Diego Ingrid Yusuf Zoe Ahmed"
)

LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts O'Brien Kowalski "
    "Müller Tanaka Okafor Haddad Svensson Rossi Dubois Patel"
)

EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me", "aol.com")

COMPANIES = (
    ("acme", "Acme Logistics"),
    ("northwind", "Northwind Health"),
    ("globex", "Globex Retail"),
    ("initech", "Initech Software"),
    ("umbrella", "Umbrella Staffing"),
    ("hooli", "Hooli Services"),
)

JOB_TITLES = _words(
    "Senior Software Engineer|Customer Support Specialist|Warehouse Associate|Registered Nurse|"
    "Sales Development Representative|Delivery Driver|Data Analyst|Retail Store Associate|"
    "Call Center Agent|Account Executive|Medical Assistant|Forklift Operator|Product Designer|"
    "Bilingual Customer Service Representative|Line Cook|Security Officer|Dental Hygienist|"
    "Pharmacy Technician|Truck Driver (CDL-A)|Site Reliability Engineer|HR Coordinator|Barista|"
    "Maintenance Technician|Recruiting Coordinator",
    sep="|",
)

LOCATIONS = _words(
    "Austin, TX|Remote|Chicago, IL|Denver, CO|Atlanta, GA|Phoenix, AZ|Seattle, WA|Miami, FL|Columbus, OH|Toronto, ON",
    sep="|",
)

INTERVIEWER_NAMES = ("Sarah", "Milo", "Ava", "Noah", "Emma", "Leo")

HIGHLIGHTS = _words(
    "Clear, structured communication|Strong customer empathy|Relevant hands-on experience|"
    "Handled a difficult scenario calmly|Good knowledge of safety procedures|Quantified past results|"
    "Enthusiastic about the role|Flexible availability including weekends|Team player mindset|"
    "Solid technical fundamentals|Demonstrated ownership of past projects|Bilingual (English/Spanish)|"
    "Asked thoughtful questions about the team|Quick problem-solving under pressure",
    sep="|",
)

SMS_CRITERIA = _words(
    "work_authorization minimum_age_18 weekend_availability reliable_transportation "
    "years_experience_2_plus night_shift_ok can_lift_50_lbs valid_drivers_license"
)

ATS_STAGES = {
    "pending": "applied",
    "in_progress": "screening",
    "evaluating": "ai_interview_complete",
    "completed": "ai_interview_complete",
    "shortlisted": "phone_screen",
    "dismissed": "rejected",
    "knocked_out": "rejected",
}

SOURCES = ("linkedin", "indeed", "careers_page", "referral", "ziprecruiter", "ats_import")

SKILLS = _words(
    "python|sql|excel|customer service|forklift|scheduling|spanish|cpr|salesforce|inventory|react|"
    "phlebotomy|pos systems|cash handling",
    sep="|",
)

CITIES = (
    ("Austin", "US"),
    ("Chicago", "US"),
    ("Toronto", "CA"),
    ("Guadalajara", "MX"),
    ("Denver", "US"),
    ("London", "GB"),
    ("Miami", "US"),
    ("Phoenix", "US"),
)

SENTIMENTS = ("positive", "neutral", "negative", "mixed")
