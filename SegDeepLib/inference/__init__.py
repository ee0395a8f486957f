"""SegDeepLib.inference"""
