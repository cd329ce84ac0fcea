// Page tokens for the list RPCs (AIP-158): opaque to clients, and bound to the query they came
// from. A token is the position to continue after (a number the list is ordered by: an order's
// or an assignment's) and a fingerprint of the query (filters, owner), so a token replayed with
// another query is INVALID_ARGUMENT instead of a wrong page. Positions, not offsets: items added
// while a client pages never shift the pages it has not read yet.
import RPCCore

/// Where a list continues.
public enum PageToken {
    /// The token for continuing after `position` in the list `query` describes.
    public static func make(after position: Int64, query: String) -> String {
        "\(String(position, radix: 36)).\(String(fnv1a(query.utf8) & 0xffff_ffff, radix: 36))"
    }

    /// The position a token continues after; nil for the first page (an empty token).
    public static func position(_ token: String, query: String) throws(RPCError) -> Int64? {
        guard !token.isEmpty else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let position = Int64(parts[0], radix: 36),
              String(parts[1]) == String(fnv1a(query.utf8) & 0xffff_ffff, radix: 36) else {
            throw RPCError(.invalidArgument, "page_token is not one this list gave for this request")
        }
        return position
    }
}
