"""SegDeepLib.preprocessing"""
