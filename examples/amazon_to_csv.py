"""Write the Amazon multi-domain reviews (Blitzer's pseudo-XML) as one user CSV.

    python3 examples/amazon_to_csv.py ../shared/data/amazon reviews.csv

Columns: text (title. review), stars (1, 2, 4 or 5), domain, polarity, and `topics` =
"domain|polarity" (two labels per row, for --task-type multilabel).
"""
import csv
import sys
from pathlib import Path

from adapterkit.data import parse_reviews

source, target = Path(sys.argv[1]), Path(sys.argv[2])
with open(target, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["text", "stars", "domain", "polarity", "topics"])
    writer.writeheader()
    for path in sorted(source.glob("*.review")):
        domain, polarity = path.name.split(".")[:2]
        for review in parse_reviews(path):
            text = f"{review.get('title', '')}. {review.get('review_text', '')}".strip()
            writer.writerow({"text": text, "stars": int(float(review["rating"])), "domain": domain,
                             "polarity": polarity, "topics": f"{domain}|{polarity}"})
print(f"wrote {target}")
