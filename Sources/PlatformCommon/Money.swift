// Money as the platform keeps it: an integer number of minor units (cents for USD) of one ISO
// 4217 currency, the way Online Boutique's `Money` and payment APIs do, so totals add up exactly.
// The seed's clients see prices as doubles in the major unit; those are derived from the minor
// units (or, for a seed client's menu update, converted to them once, rounded to the minor unit).
// How many digits the minor unit has is ISO 4217's table; only the currencies whose minor unit
// is not two digits are listed.

/// Amounts in minor units of an ISO 4217 currency.
public enum Money {
    /// The currency of a restaurant that never named one.
    public static let defaultCurrency = "USD"
    /// The most one menu item may cost, in minor units (a million USD).
    public static let maxItemMinorUnits: Int64 = 100_000_000

    /// Whether `code` has the shape of an ISO 4217 code: three capital letters.
    public static func isCurrencyCode(_ code: String) -> Bool {
        code.utf8.count == 3 && code.utf8.allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }
    }

    /// The digits after the decimal point in `currency`'s amounts (ISO 4217's minor unit).
    public static func minorUnitDigits(_ currency: String) -> Int {
        switch currency {
        case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF": 0
        case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND": 3
        case "CLF", "UYW": 4
        default: 2
        }
    }

    /// `minorUnits` in the major unit, as the seed's double fields carry it.
    public static func major(_ minorUnits: Int64, currency: String) -> Double {
        Double(minorUnits) / scale(currency)
    }

    /// A major-unit amount in minor units, rounded to the nearest; nil when it is not a finite
    /// amount of at least zero or more than `limit`.
    public static func minorUnits(_ major: Double, currency: String, limit: Int64) -> Int64? {
        guard major.isFinite, major >= 0 else { return nil }
        let units = (major * scale(currency)).rounded()
        guard units <= Double(limit) else { return nil }
        return Int64(units)
    }

    private static func scale(_ currency: String) -> Double {
        var scale = 1.0
        for _ in 0..<minorUnitDigits(currency) { scale *= 10 }
        return scale
    }
}
