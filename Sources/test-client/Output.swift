// How test-client writes: responses as `field: value` lines on standard output (easy to read and
// to grep), errors and progress on standard error, numbers and columns formatted by hand (the
// client links only FoundationEssentials, which has no number formatting).
import Glibc
import PlatformProtos

/// Standard error as a text stream, for `print(..., to: &standardError)`.
struct StandardError: TextOutputStream {
    mutating func write(_ text: String) {
        _ = Glibc.write(STDERR_FILENO, text, text.utf8.count)
    }
}

/// Writes one line to standard error.
func printError(_ line: String) {
    var standardError = StandardError()
    print(line, to: &standardError)
}

/// `value` with exactly `digits` decimals (values are non-negative: rates, latencies).
func fixed(_ value: Double, digits: Int) -> String {
    let scale = (0..<digits).reduce(1) { result, _ in result * 10 }
    let units = Int((value * Double(scale)).rounded())
    guard digits > 0 else { return "\(units)" }
    let fraction = String(units % scale)
    return "\(units / scale)." + String(repeating: "0", count: digits - fraction.count) + fraction
}

/// Pads `text` with spaces to `width`, on the left for numbers so columns line up on the right.
func padded(_ text: String, _ width: Int, alignRight: Bool = false) -> String {
    let padding = String(repeating: " ", count: max(0, width - text.count))
    return alignRight ? padding + text : text + padding
}

/// A response shown as `field: value` lines, named as in the .proto files.
protocol FieldListing {
    var fields: [(name: String, value: String)] { get }
}

extension FieldListing {
    /// The fields, one `name: value` per line.
    var listing: String { fields.map { "\($0.name): \($0.value)" }.joined(separator: "\n") }
    /// The fields on one line, for the tour's "got" lines.
    var summary: String { fields.map { "\($0.name)=\($0.value)" }.joined(separator: " ") }
}

extension PlaceOrderResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        [("order_id", orderId), ("status", status)] + (currency.isEmpty ? [] : [("total", "\(totalCents) \(currency) minor units")])
    }
}

extension GetOrderStatusResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        var fields = [("order_id", orderId), ("status", status), ("items", items.joined(separator: ", ")), ("total_price", "\(totalPrice)")]
        fields += lines.map { line in
            ("line", "\(line.quantity) x \(line.menuItemId) (\(line.name)) at \(line.unitPriceCents) = \(line.lineTotalCents)"
                + (line.note.isEmpty ? "" : ", note: \(line.note)"))
        }
        if !currency.isEmpty { fields.append(("total", "\(totalCents) \(currency) minor units")) }
        if estimatedReadyAtUnixMs != 0 { fields.append(("estimated_ready_at_unix_ms", "\(estimatedReadyAtUnixMs)")) }
        if !rejectReason.isEmpty { fields.append(("reject_reason", rejectReason + (rejectMessage.isEmpty ? "" : ": \(rejectMessage)"))) }
        if !kitchenStatus.isEmpty { fields.append(("kitchen_status", kitchenStatus)) }
        if !deliveryStatus.isEmpty { fields.append(("delivery_status", deliveryStatus)) }
        if !canceledBy.isEmpty { fields.append(("canceled_by", canceledBy + (cancelReason.isEmpty ? "" : ": \(cancelReason)"))) }
        if deliveryAddress != Address() {
            let address = deliveryAddress
            fields.append(("delivery_address", [address.street, address.postalCode, address.city].filter { !$0.isEmpty }.joined(separator: ", ")
                + (address.notes.isEmpty ? "" : " (\(address.notes))")))
        }
        return fields
    }
}

extension CancelOrderResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("order_id", orderId), ("status", status)] }
}

extension UpdateMenuResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("status", status)] }
}

extension MenuItem {
    /// One item on a line: `id: name, price (minor units)[, unavailable][, description]`.
    var line: String {
        "\(itemId): \(name), \(price) (\(priceCents))" + (unavailable ? ", unavailable" : "") + (description.isEmpty ? "" : ", \(description)")
    }
}

extension GetMenuResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        [("restaurant_id", restaurantId), ("currency", currency), ("status", status == .paused ? "PAUSED" : "OPEN")]
            + (pausedUntilUnixMs == 0 ? [] : [("paused_until_unix_ms", "\(pausedUntilUnixMs)")]) + items.map { ("item", $0.line) }
    }
}

extension AcceptOrderResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        [("order_id", orderId), ("status", status)]
            + (estimatedReadyAtUnixMs == 0 ? [] : [("estimated_ready_at_unix_ms", "\(estimatedReadyAtUnixMs)")])
    }
}

extension SetRestaurantStatusResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        [("restaurant_id", restaurantId), ("status", status == .paused ? "PAUSED" : "OPEN")]
            + (pausedUntilUnixMs == 0 ? [] : [("paused_until_unix_ms", "\(pausedUntilUnixMs)")])
    }
}

extension RejectOrderResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("order_id", orderId), ("status", status)] }
}

extension AssignDriverResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("assignment_id", assignmentId), ("status", status)] }
}

extension UpdateDeliveryStatusResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("order_id", orderId), ("status", status)] }
}

extension DeliveryAssignment {
    var line: String { "\(assignmentId) order=\(orderId) status=\(status)" }
}

extension GetDriverAssignmentsResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        (assignments.isEmpty ? [("assignments", "none")] : assignments.map { ("assignment", $0.line) })
            + (nextPageToken.isEmpty ? [] : [("next_page_token", nextPageToken)])
    }
}

extension ListOrdersResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        var fields = orders.map { ("order", $0.line) }
        if fields.isEmpty { fields = [("orders", "none")] }
        if !nextPageToken.isEmpty { fields.append(("next_page_token", nextPageToken)) }
        return fields
    }
}

extension OrderSummary {
    /// One order on a line: `id STATUS [kitchen K] customer C [restaurant R]: items (total)`.
    var line: String {
        let kitchen = kitchenStatus.isEmpty ? "" : " kitchen \(kitchenStatus)"
        let restaurant = restaurantId.isEmpty ? "" : " restaurant \(restaurantId)"
        return "\(orderId) \(status)\(kitchen) customer \(customerId)\(restaurant): \(items.joined(separator: ", ")) (\(totalPrice))"
    }
}

extension OrderUpdate: FieldListing {
    var fields: [(name: String, value: String)] {
        [("order_id", orderId), ("status", status), ("driver_id", driverId), ("updated_at_unix_ms", "\(updatedAtUnixMs)"),
         ("final", "\(final)")]
            + (estimatedReadyAtUnixMs == 0 ? [] : [("estimated_ready_at_unix_ms", "\(estimatedReadyAtUnixMs)")])
            + (rejectReason.isEmpty ? [] : [("reject_reason", rejectReason)])
            + (kitchenStatus.isEmpty ? [] : [("kitchen_status", kitchenStatus)])
            + (deliveryStatus.isEmpty ? [] : [("delivery_status", deliveryStatus)])
            + (cancelReason.isEmpty ? [] : [("cancel_reason", cancelReason)])
    }
}

extension RestaurantOrderUpdate: FieldListing {
    var fields: [(name: String, value: String)] {
        var fields = [("order_id", orderId), ("status", status), ("customer_id", customerId)]
        if !items.isEmpty { fields += [("items", items.joined(separator: ",")), ("total_price", "\(totalPrice)")] }
        if !driverId.isEmpty { fields.append(("driver_id", driverId)) }
        if !kitchenStatus.isEmpty { fields.append(("kitchen_status", kitchenStatus)) }
        return fields + [("updated_at_unix_ms", "\(updatedAtUnixMs)")]
    }
}

extension DriverAssignmentUpdate: FieldListing {
    var fields: [(name: String, value: String)] {
        [("assignment_id", assignmentId), ("order_id", orderId), ("status", status), ("updated_at_unix_ms", "\(updatedAtUnixMs)")]
    }
}

extension MarkOrderReadyResponse: FieldListing {
    var fields: [(name: String, value: String)] { [("order_id", orderId), ("status", status), ("kitchen_status", kitchenStatus)] }
}

extension SetDriverAvailabilityResponse: FieldListing {
    var fields: [(name: String, value: String)] {
        [("driver_id", driverId), ("status", status == .onShift ? "ON_SHIFT" : "OFF_SHIFT"),
         ("waiting_orders_assigned", "\(waitingOrdersAssigned)")]
    }
}
