"""Conversion of raw CREMA-D / AVE downloads into prepared datasets."""
