# /// script
# requires-python = ">=3.99"
# ///
print("never runs")
