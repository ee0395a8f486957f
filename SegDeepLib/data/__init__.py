"""SegDeepLib.data"""
